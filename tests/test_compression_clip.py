"""Gradient clipping in compression training: a guard that changes nothing until it is needed."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from naslib_bayes.compression import CompressionConfig, train_dense
from naslib_bayes.data import load_dataset
from naslib_bayes.errors import UserError

BASE = dict(lam=0.1, epochs=3, finetune_epochs=1, batch_size=64, lr=0.05, augment=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _fresh_mlp() -> nn.Sequential:
    """The same initial weights on every call, so trained networks can be compared with them."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _trained(digits, **overrides) -> nn.Sequential:
    model = _fresh_mlp()
    train_dense(model, digits.train, CompressionConfig(**{**BASE, **overrides}), seed=0)
    return model


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_a_norm_above_every_gradient_leaves_training_bit_for_bit_the_same(digits):
    assert torch.equal(_flat(_trained(digits, grad_clip=1e6)), _flat(_trained(digits, grad_clip=0)))


def test_clipping_bounds_every_step_by_lr_times_the_norm(digits):
    """Plain SGD (no momentum, no weight decay): each step moves the parameters by at most lr * norm."""
    start = _flat(_fresh_mlp())
    plain = dict(momentum=0.0, weight_decay=0.0)
    steps = BASE["epochs"] * -(-len(digits.train.labels) // BASE["batch_size"])
    bound = steps * BASE["lr"] * 1e-3
    clipped = float((_flat(_trained(digits, grad_clip=1e-3, **plain)) - start).norm())
    free = float((_flat(_trained(digits, grad_clip=0, **plain)) - start).norm())
    assert clipped <= bound * (1 + 1e-4)
    assert free > 10 * bound  # without it the same training moves much further


@pytest.mark.parametrize("norm", [-1.0, float("nan")])
def test_a_clip_norm_must_be_a_non_negative_number(norm):
    with pytest.raises(UserError, match="grad_clip"):
        CompressionConfig(**{**BASE, "grad_clip": norm})
