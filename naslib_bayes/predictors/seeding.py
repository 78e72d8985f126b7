"""Weight initialisation from a local ``torch.Generator`` (never torch's global random state).

``reset_parameters_(module, generator)`` re-draws every learnable tensor with the same
distributions PyTorch's own ``reset_parameters`` use, so a model built under any global seed
becomes a pure function of ``generator``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator) -> None:
    tensor.copy_(torch.empty_like(tensor).uniform_(-bound, bound, generator=generator))


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * (weight[0, 0].numel() if weight.dim() > 2 else 1)


@torch.no_grad()
def reset_parameters_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise ``module`` in place from ``generator`` and return it.

    Linear/conv layers: ``U(+-1/sqrt(fan_in))`` for weight and bias; GRU cells:
    ``U(+-1/sqrt(hidden))``; attention: Xavier-uniform projections with zero biases; layer
    norms keep their deterministic (1, 0) start; any other parameter owned directly by a module
    (learned queries, context vectors) is drawn Xavier-uniform.
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            bound = _fan_in(sub.weight) ** -0.5
            _uniform_(sub.weight, bound, generator)
            if sub.bias is not None:
                _uniform_(sub.bias, bound, generator)
        elif isinstance(sub, (nn.GRUCell, nn.GRU, nn.LSTMCell)):
            for param in sub.parameters(recurse=False):
                _uniform_(param, sub.hidden_size**-0.5, generator)
        elif isinstance(sub, nn.MultiheadAttention):
            fan_out, fan_in = sub.in_proj_weight.shape
            _uniform_(sub.in_proj_weight, math.sqrt(6.0 / (fan_in + fan_out)), generator)
        elif isinstance(sub, nn.LayerNorm):
            sub.reset_parameters()
        else:
            for param in sub.parameters(recurse=False):
                if param.dim() >= 2:
                    fan_in, fan_out = param.shape[-1], param.shape[-2]
                    _uniform_(param, math.sqrt(6.0 / (fan_in + fan_out)), generator)
    for sub in module.modules():  # after the Linear pass, which also visits out_proj
        if isinstance(sub, nn.MultiheadAttention):
            sub.in_proj_bias.zero_()
            sub.out_proj.bias.zero_()
    return module
