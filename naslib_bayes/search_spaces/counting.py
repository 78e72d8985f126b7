"""Parameter and FLOP counting for any torch network (NB201, DARTS-space or compressed CNNs).

FLOPs are measured, not derived from an architecture description: forward hooks record the
output shape of every counted layer while the network runs once on a dummy input, so any
network built from standard layers is covered, whatever its wiring, and a layer called twice
(weight sharing) is counted twice. All counts are per input sample (batch size 1).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _MaxPoolNd,
)

from naslib_bayes.errors import UserError

#: Categories reported by :func:`flop_breakdown`.
FLOP_CATEGORIES: tuple[str, ...] = ("conv", "linear", "bias", "batchnorm", "pooling", "activation")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (each shared tensor once); BN running stats are buffers, not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flop_breakdown(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Per-category operation counts of one forward pass on a single sample.

    Args:
        model: any module taking one tensor of shape (1, *input_shape).
        input_shape: shape of one sample without the batch dimension, e.g. (3, 32, 32).

    Returns ``{category: count}`` for :data:`FLOP_CATEGORIES`:

    * ``conv``: multiply-accumulates of convolutions, ``out.numel() * C_in / groups * prod(kernel)``
      (transposed convolutions: ``in.numel() * C_out / groups * prod(kernel)``);
    * ``linear``: multiply-accumulates of ``nn.Linear``, ``out.numel() * in_features``;
    * ``bias``: one addition per output element of a convolution or linear layer with a bias;
    * ``batchnorm``: one multiply-add per output element (the inference form, affine folded in);
    * ``pooling``: for fixed-window pools, one operation per output element and window position
      (``out.numel() * prod(kernel)``); for adaptive pools, one per input element;
    * ``activation``: one operation per input element of a ReLU-family, sigmoid, tanh, GELU or
      SiLU module (functional calls inside ``forward`` are invisible to hooks).

    Additions of parallel branches and other tensor arithmetic in ``forward`` are not counted. The
    model runs in eval mode under ``no_grad`` (BN statistics untouched); each submodule's
    training flag is restored afterwards.
    """
    sample = _dummy_input(model, input_shape)
    totals = dict.fromkeys(FLOP_CATEGORIES, 0)
    handles = [m.register_forward_hook(_hook(totals)) for m in model.modules() if _counter_for(m) is not None]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return totals


def count_flops(model: nn.Module, input_shape: Sequence[int], include_bias: bool = False) -> int:
    """Multiply-accumulates of all convolutions and linear layers for one sample of ``input_shape``.

    One MAC counts as one FLOP, the convention of NAS-Bench-201's ``flop`` field. BatchNorm,
    pooling and activations are left out (see :func:`flop_breakdown` for those terms).
    ``include_bias=True`` adds one operation per output element of a conv or linear layer that
    has a bias (for an :class:`~naslib_bayes.search_spaces.nasbench201.model.NB201Network` it is
    ``num_classes``, the classifier being its only layer with a bias). This is not NAS-Bench-201's
    ``flop`` field: its counting code adds pooling and other per-element terms, so on CIFAR-10
    cells the field is about 6% larger (62.50M against 58.90M for ``(4, 3, 3, 3, 2, 3)``), while
    parameter counts agree exactly. ``input_shape`` excludes the batch dimension, e.g. (3, 32, 32).
    """
    counts = flop_breakdown(model, input_shape)
    return counts["conv"] + counts["linear"] + (counts["bias"] if include_bias else 0)


# ---- internals ----------------------------------------------------------------------------
def _dummy_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise UserError(f"input_shape must be positive sizes without the batch dimension, got {tuple(input_shape)}")
    # Follow the model's device and dtype; a model on the "meta" device counts without computing.
    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), None)
    if reference is None:
        return torch.zeros((1,) + shape)
    return torch.zeros((1,) + shape, device=reference.device, dtype=reference.dtype)


def _hook(totals: dict[str, int]) -> Callable:
    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        for category, count in _counter_for(module)(module, inputs[0], output).items():
            totals[category] += count

    return record


def _counter_for(module: nn.Module) -> Callable | None:
    for kind, counter in _COUNTERS:
        if isinstance(module, kind):
            return counter
    return None


def _conv(module: _ConvNd, x: torch.Tensor, out: torch.Tensor) -> dict[str, int]:
    kernel = math.prod(module.kernel_size)
    if module.transposed:
        macs = x.numel() * (module.out_channels // module.groups) * kernel
    else:
        macs = out.numel() * (module.in_channels // module.groups) * kernel
    return {"conv": macs, "bias": out.numel() if module.bias is not None else 0}


def _linear(module: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> dict[str, int]:
    return {"linear": out.numel() * module.in_features, "bias": out.numel() if module.bias is not None else 0}


def _batchnorm(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> dict[str, int]:
    return {"batchnorm": out.numel()}


def _window_pool(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> dict[str, int]:
    kernel = module.kernel_size
    dims = out.dim() - 2  # spatial dimensions
    window = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel**dims
    return {"pooling": out.numel() * window}


def _adaptive_pool(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> dict[str, int]:
    return {"pooling": x.numel()}


def _activation(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> dict[str, int]:
    return {"activation": x.numel()}


_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
)


_COUNTERS = (
    (_ConvNd, _conv),
    (nn.Linear, _linear),
    (_BatchNorm, _batchnorm),
    (_AvgPoolNd, _window_pool),
    (_MaxPoolNd, _window_pool),
    (_AdaptiveAvgPoolNd, _adaptive_pool),
    (_AdaptiveMaxPoolNd, _adaptive_pool),
    (_ACTIVATIONS, _activation),
)
