"""The deep-kernel GP against a closed-form exact GP, and its marginal likelihood against gpytorch's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from naslib_bayes.predictors.deep_kernel_gp import DeepKernelGP, FeatureMLP



def _matern52(a: np.ndarray, b: np.ndarray, lengthscale: float, outputscale: float) -> np.ndarray:
    r = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)) / lengthscale
    return outputscale * (1 + math.sqrt(5) * r + 5.0 / 3.0 * r**2) * np.exp(-math.sqrt(5) * r)


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(0)
    mlp = FeatureMLP(3, (8,), 4, generator=g).double()
    gp = DeepKernelGP(mlp).double()
    gp.covar_module.outputscale = 1.7
    gp.covar_module.base_kernel.lengthscale = 0.8
    gp.likelihood.noise = 0.05
    gp.mean_module.constant.data.fill_(0.3)
    x = torch.rand(25, 3, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]
    x_test = torch.rand(40, 3, generator=g, dtype=torch.float64) * 4 - 2
    return gp, x, y, x_test


def _closed_form(gp, x, y, x_test):
    with torch.no_grad():
        z, z_test = gp.mlp(x).numpy(), gp.mlp(x_test).numpy()
    ell, s = float(gp.covar_module.base_kernel.lengthscale), float(gp.covar_module.outputscale)
    noise, m = float(gp.likelihood.noise), float(gp.mean_module.constant)
    k = _matern52(z, z, ell, s) + noise * np.eye(len(z))
    k_star = _matern52(z_test, z, ell, s)
    mean = m + k_star @ np.linalg.solve(k, y.numpy() - m)
    var = s - np.einsum("ij,ji->i", k_star, np.linalg.solve(k, k_star.T))
    residual = y.numpy() - m
    log_ml = -0.5 * residual @ np.linalg.solve(k, residual) - 0.5 * np.linalg.slogdet(k)[1] - 0.5 * len(z) * math.log(2 * math.pi)
    return mean, np.sqrt(var), log_ml / len(z)


def test_posterior_equals_the_closed_form_exact_gp(toy):
    gp, x, y, x_test = toy
    gp.condition_on(x, y)
    mean, std = gp.posterior(x_test, batch_size=7)  # several batches
    ref_mean, ref_std, _ = _closed_form(gp, x, y, x_test)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(std.numpy(), ref_std, rtol=0, atol=1e-9)


def test_posterior_equals_gpytorch_prediction(toy):
    import gpytorch

    from naslib_bayes.predictors.deep_kernel_gp import exact_gp_settings

    gp, x, y, x_test = toy
    gp.condition_on(x, y)
    mean, std = gp.posterior(x_test)
    gp.eval()
    with torch.no_grad(), exact_gp_settings():
        reference = gp(x_test)
    gp.train()
    assert torch.allclose(mean, reference.mean, atol=1e-9)
    assert torch.allclose(std, reference.variance.sqrt(), atol=1e-9)
    assert isinstance(reference, gpytorch.distributions.MultivariateNormal)


def test_marginal_likelihood_equals_closed_form_and_gpytorch(toy):
    gp, x, y, x_test = toy
    *_, log_ml = _closed_form(gp, x, y, x_test)
    assert float(gp.neg_mll(x, y)) == pytest.approx(-log_ml, abs=1e-9)
    assert float(gp.neg_mll_gpytorch(x, y)) == pytest.approx(-log_ml, abs=1e-9)


def test_fitting_raises_the_marginal_likelihood_and_interpolates(toy):
    gp, x, y, x_test = toy
    before = float(gp.neg_mll(x, y))
    optimizer = torch.optim.Adam(gp.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        loss = gp.neg_mll(x, y)
        loss.backward()
        optimizer.step()
    assert float(gp.neg_mll(x, y)) < before - 0.2
    gp.condition_on(x, y)
    mean, std = gp.posterior(x)
    # At training inputs the posterior sits close to the data, with std below the prior's.
    assert float((mean - y).abs().mean()) < 0.3 * float(y.std())
    assert bool((std < gp.covar_module.outputscale.sqrt()).all())


def test_a_merged_point_with_noise_scale_one_over_m_is_the_m_observations_it_stands_for(toy):
    """Gaussian noise: m observations of one input have the same posterior as their mean observed
    once with noise / m, which is how the prior's evidence merges the datasets of one cell."""
    gp, x, y, x_test = toy
    g = torch.Generator().manual_seed(1)
    repeats = torch.tensor([1, 3, 2] + [1] * (len(x) - 3))
    noisy = y.repeat_interleave(repeats) + 0.2 * torch.randn(int(repeats.sum()), generator=g, dtype=torch.float64)
    gp.condition_on(x.repeat_interleave(repeats, dim=0), noisy)
    mean_all, std_all = gp.posterior(x_test)
    means = torch.zeros(len(x), dtype=torch.float64).index_add_(0, torch.arange(len(x)).repeat_interleave(repeats), noisy)
    gp.condition_on(x, means / repeats, 1.0 / repeats.double())
    mean, std = gp.posterior(x_test)
    assert torch.allclose(mean, mean_all, atol=1e-9) and torch.allclose(std, std_all, atol=1e-9)
    gp.condition_on(x, means / repeats)  # without the noise scales the posterior differs
    assert not torch.allclose(gp.posterior(x_test)[0], mean_all, atol=1e-4)


def _matern52_lengthscale_derivative(a: np.ndarray, b: np.ndarray, lengthscale: float, outputscale: float) -> np.ndarray:
    """d k / d lengthscale of the Matern-5/2 kernel: (5/3) s r^2 (1 + sqrt(5) r) exp(-sqrt(5) r) / l."""
    r = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)) / lengthscale
    return outputscale * 5.0 / 3.0 * r**2 * (1 + math.sqrt(5) * r) * np.exp(-math.sqrt(5) * r) / lengthscale


def _numpy_features(gp, x: np.ndarray, weight_shift: float = 0.0) -> np.ndarray:
    """xi(x) by hand (ReLU MLP), with ``weight_shift`` added to the first layer's weight [0, 0]."""
    layers = [m for m in gp.mlp.net if isinstance(m, torch.nn.Linear)]
    h = x
    for i, layer in enumerate(layers):
        w, b = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy()
        if i == 0:
            w[0, 0] += weight_shift
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def _numpy_neg_mll(z: np.ndarray, y: np.ndarray, lengthscale: float, outputscale: float, noise: float, mean: float) -> float:
    k = _matern52(z, z, lengthscale, outputscale) + noise * np.eye(len(z))
    r = y - mean
    return float(0.5 * r @ np.linalg.solve(k, r) + 0.5 * np.linalg.slogdet(k)[1] + 0.5 * len(z) * math.log(2 * math.pi)) / len(z)


def test_marginal_likelihood_gradient_equals_the_closed_form(toy):
    """d(-log p(y)) / d theta = -0.5 tr((alpha alpha^T - K^-1) dK/dtheta) / n for the kernel's
    hyper-parameters (each a softplus of its raw parameter: d value / d raw = sigmoid(raw)),
    -1^T alpha / n for the constant mean, and a central difference of a by-hand MLP for xi."""
    gp, x, y, _ = toy
    loss = gp.neg_mll(x, y)
    loss.backward()
    z, yn, n = _numpy_features(gp, x.numpy()), y.numpy(), len(y)
    ell, s = float(gp.covar_module.base_kernel.lengthscale), float(gp.covar_module.outputscale)
    noise, m = float(gp.likelihood.noise), float(gp.mean_module.constant)
    k_inv = np.linalg.inv(_matern52(z, z, ell, s) + noise * np.eye(n))
    alpha = k_inv @ (yn - m)
    inner = np.outer(alpha, alpha) - k_inv

    def grad(dk):
        return -0.5 * float(np.sum(inner * dk)) / n

    expected = {
        "covar_module.raw_outputscale": grad(_matern52(z, z, ell, 1.0)),
        "covar_module.base_kernel.raw_lengthscale": grad(_matern52_lengthscale_derivative(z, z, ell, s)),
        "likelihood.noise_covar.raw_noise": grad(np.eye(n)),
    }
    params = dict(gp.named_parameters())
    for name, value_gradient in expected.items():
        chain = float(torch.sigmoid(params[name].detach()).reshape(()))
        assert float(params[name].grad.reshape(())) == pytest.approx(value_gradient * chain, rel=1e-7, abs=1e-12), name
    assert float(gp.mean_module.constant.grad.reshape(())) == pytest.approx(-alpha.sum() / n, rel=1e-7)
    h = 1e-6
    difference = (_numpy_neg_mll(_numpy_features(gp, x.numpy(), h), yn, ell, s, noise, m)
                  - _numpy_neg_mll(_numpy_features(gp, x.numpy(), -h), yn, ell, s, noise, m)) / (2 * h)
    assert float(gp.mlp.net[0].weight.grad[0, 0]) == pytest.approx(difference, rel=1e-5, abs=1e-9)


def test_the_kernel_has_one_shared_lengthscale_and_the_noise_a_floor_of_1e_4(toy):
    """No ARD (one lengthscale for every feature dimension, as the paper), and the likelihood's
    noise is softplus(raw) + 1e-4, so however far fitting pushes it, it stays above 1e-4 (the
    bound is held in single precision, hence rel=1e-6)."""
    gp, *_ = toy
    assert gp.covar_module.base_kernel.lengthscale.numel() == 1
    assert gp.covar_module.base_kernel.ard_num_dims is None
    raw = gp.likelihood.noise_covar.raw_noise
    with torch.no_grad():
        raw.fill_(-50.0)
    assert float(gp.likelihood.noise) == pytest.approx(1e-4 + math.log1p(math.exp(-50.0)), rel=1e-6)
    with torch.no_grad():
        raw.fill_(0.7)
    assert float(gp.likelihood.noise) == pytest.approx(1e-4 + math.log1p(math.exp(0.7)), rel=1e-6)
