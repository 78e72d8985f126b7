"""The deep-kernel GP of TNAS: an MLP xi on kernel inputs feeding a Matern-5/2 exact GP.

``k(a, b) = s * Matern52(||xi(a) - xi(b)|| / l)``, constant mean, Gaussian likelihood, trained by
the exact log marginal likelihood (gpytorch). Kernel inputs are the architecture encoding psi,
concatenated with the dataset encoding phi when one is used.

Everything here works in the dtype of the MLP (float64 by default: the Cholesky factors of GPs
fitted to a handful of near-identical accuracies need the headroom).
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import gpytorch
import torch
from torch import nn

from naslib_bayes.predictors.seeding import reset_parameters_


class FeatureMLP(nn.Module):
    """xi: (n, in_dim) -> (n, out_dim), ReLU hidden layers, linear output."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (32, 32), out_dim: int = 16,
                 generator: torch.Generator | None = None):
        super().__init__()
        layers, width = [], in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        if generator is not None:
            reset_parameters_(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DeepKernelGP(gpytorch.models.ExactGP):
    """Exact GP whose kernel sees ``xi(x)``: constant mean, ScaleKernel(Matern nu=5/2), no ARD.

    Train data are set with :meth:`condition_on` (they change with every meta-training task
    and BO iteration); the likelihood is a :class:`gpytorch.likelihoods.GaussianLikelihood`.
    """

    def __init__(self, mlp: FeatureMLP, noise_floor: float = 1e-4):
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(noise_floor))
        super().__init__(None, None, likelihood)
        self.mlp = mlp
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5))

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        """``x`` (n, in_dim) kernel inputs -> prior over f at x."""
        z = self.mlp(x)
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    def condition_on(self, x: torch.Tensor, y: torch.Tensor, noise_scale: torch.Tensor | None = None) -> "DeepKernelGP":
        """Use (x (n, in_dim), y (n,)) as the GP's training data for :meth:`posterior`.

        ``noise_scale`` (n,) multiplies the likelihood's noise per point: a point standing for
        the mean of m observations of one input has noise_scale 1/m (an exact reduction).
        """
        self.set_train_data(inputs=(x,), targets=y, strict=False)
        self._noise_scale = noise_scale
        return self

    def kernel(self, z1: torch.Tensor, z2: torch.Tensor | None = None) -> torch.Tensor:
        """Dense ``s * Matern52(z1, z2)`` of features (n1, d), (n2, d) -> (n1, n2).

        Calls the gpytorch kernels' ``forward`` directly: the same formula and parameters as
        ``covar_module(z1, z2)``, without building a lazy LinearOperator on every call.
        """
        z2 = z1 if z2 is None else z2
        return self.covar_module.outputscale * self.covar_module.base_kernel.forward(z1, z2)

    def neg_mll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative exact log marginal likelihood of (x (n, in_dim), y (n,)) per observation.

        The same quantity as gpytorch's ``ExactMarginalLogLikelihood`` (the model has no
        priors), computed from one Cholesky factor: gpytorch's generic path costs ~20 ms of
        Python per call, which would dominate the 50 fine-tuning steps of every BO iteration.

        Every point gets the likelihood's noise: unlike :meth:`posterior`, this ignores the
        per-point ``noise_scale`` of :meth:`condition_on`. That is what its callers fit: BO's
        fine-tuning (one observation per queried cell) and meta-training's tasks (one value per
        cell of one dataset) are single observations; only the merged meta-training evidence
        the prior conditions on carries noise scales, and no likelihood is fitted to it.
        """
        kernel = self.kernel(self.mlp(x))
        factor = _cholesky(kernel, self.likelihood.noise.squeeze())
        residual = (y - self.mean_module.constant.reshape(())).unsqueeze(1)
        white = torch.linalg.solve_triangular(factor, residual, upper=False)
        n = y.numel()
        return (0.5 * (white * white).sum() + factor.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)) / n

    def neg_mll_gpytorch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`neg_mll` through gpytorch's ``ExactMarginalLogLikelihood`` (the reference)."""
        self.condition_on(x, y)
        self.train()
        with exact_gp_settings():
            return -gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self)(self(x), y)

    @torch.no_grad()
    def posterior(self, x: torch.Tensor, batch_size: int = 4096, variance: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior mean and standard deviation of the latent f at ``x`` (n, in_dim), each (n,).

        The exact GP posterior given the data set by :meth:`condition_on`, computed from one
        Cholesky factor of ``K + noise * I`` and test points taken in batches, so scoring all
        15,625 cells never builds a 15,625-row covariance (gpytorch's predictive path forms the
        joint train-and-test covariance). ``variance=False`` skips the variance (std is None).
        """
        (x_train,), y_train = self.train_inputs, self.train_targets
        z_train = self.mlp(x_train)
        mean0 = self.mean_module.constant.reshape(())
        noise = self.likelihood.noise.squeeze()
        scale = getattr(self, "_noise_scale", None)
        factor = _cholesky(self.kernel(z_train), noise if scale is None else noise * scale)
        alpha = torch.cholesky_solve((y_train - mean0).unsqueeze(1), factor).squeeze(1)
        means, stds = [], []
        for start in range(0, x.size(0), batch_size):
            z = self.mlp(x[start : start + batch_size])
            cross = self.kernel(z, z_train)  # (b, n)
            means.append(mean0 + cross @ alpha)
            if variance:
                v = torch.linalg.solve_triangular(factor, cross.t(), upper=False)
                stds.append((self.covar_module.outputscale - (v * v).sum(0)).clamp_min(0.0).sqrt())
        return torch.cat(means), (torch.cat(stds) if variance else None)

    def hyperparameters(self) -> dict[str, float]:
        """The GP's scalar hyper-parameters, for logs."""
        return {
            "mean": float(self.mean_module.constant.detach()),
            "outputscale": float(self.covar_module.outputscale.detach()),
            "lengthscale": float(self.covar_module.base_kernel.lengthscale.detach()),
            "noise": float(self.likelihood.noise.detach()),
        }


def _cholesky(kernel: torch.Tensor, noise) -> torch.Tensor:
    """Lower Cholesky factor of ``kernel + diag(noise)`` (differentiable), with jitter if rounding needs it.

    ``noise`` is a scalar or a (n,) vector.
    """
    noise = torch.as_tensor(noise, dtype=kernel.dtype).expand(kernel.size(0))
    for jitter in (0.0, 1e-8, 1e-6, 1e-4):
        factor, info = torch.linalg.cholesky_ex(kernel + torch.diag(noise + jitter))
        if int(info) == 0:
            return factor
    raise torch.linalg.LinAlgError("kernel matrix is not positive definite even with jitter 1e-4")


@contextlib.contextmanager
def exact_gp_settings():
    """Cholesky for every size (gpytorch switches to iterative solvers above 800 points by default)."""
    with gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False), \
            gpytorch.settings.detach_test_caches(True):
        yield
