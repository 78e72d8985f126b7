"""From switch decisions to a physically smaller network: dependencies, bias folding, slimming.

The entropy criterion decides per unit whether its parent and child switches survive
(:meth:`SwitchedNetwork.hard_update`). Setting the others to zero gives the *masked network*
(:meth:`SwitchedNetwork.masked`). :func:`plan_pruning` then works out which units the slimmed
network can do without while computing exactly what the masked network computes, from the
network's connectivity: layer ``l``'s unit ``k`` is connected to its input group ``j`` when
the weights between them (a conv kernel slice, or the block of a linear layer's columns that
a flattened channel becomes) are not all zero.

* **Input dependence** (forward): an input group is live when its child switch survives; a
  unit is input-dependent when its parent switch survives and it is connected to a live,
  input-dependent input group. A unit that is not is *constant*.
* **Consumers** (backward): the last layer's units are needed; an input group is needed when
  its child switch survives and it is connected to a needed unit of its layer; a unit is
  needed when its parent switch survives and its consumer input is needed. So a unit whose
  consumers are all pruned is pruned, and a consumer input whose producer is pruned is removed.
* A unit is **kept** when it is input-dependent and needed. Every other unit is removed, and
  what it still contributes to its consumers is a constant (zero for a pruned switch; for a
  constant unit, e.g. BN's shift or a bias through ReLU) — that constant is computed on the
  masked network in eval mode and **folded into the consumers' biases**: across a ``Flatten``
  position by position, into a convolution's bias when it is the same at every output position.
  A constant unit whose contribution is not (zero padding makes border positions differ) is
  kept instead, so the result stays exact.

:func:`slim` builds the smaller network (weights copied, channels and neurons removed; a first
layer that lost inputs is preceded by an :class:`~naslib_bayes.compression.trace.InputSelect`);
its outputs equal the masked network's in eval mode.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from naslib_bayes.compression.switched import SwitchedNetwork
from naslib_bayes.compression.trace import InputSelect
from naslib_bayes.errors import UserError

#: Relative tolerance for "the same at every output position".
UNIFORM_RTOL = 1e-9


@dataclass
class PrunePlan:
    """What :func:`slim` keeps and folds.

    Attributes:
        keep_units: per layer, bool (units,) (the last layer keeps all).
        keep_inputs: per layer, bool (in_groups,) (for layers after the first it equals the
            previous layer's ``keep_units``).
        bias_shift: per layer, float64 (units,) to add to the layer's bias (zeros if none).
        removed: per layer, counts of removed units by reason: ``pruned`` (a switch failed the
            entropy criterion), ``no_consumer`` (nothing needs its output), ``constant``
            (folded into the consumers' biases); ``constant_kept`` counts constant units that
            could not be folded exactly.
    """

    keep_units: list[torch.Tensor]
    keep_inputs: list[torch.Tensor]
    bias_shift: list[torch.Tensor]
    removed: list[dict[str, int]] = field(default_factory=list)

    def kept_widths(self) -> list[int]:
        return [int(k.sum()) for k in self.keep_units]


def connectivity(net: SwitchedNetwork, l: int) -> torch.Tensor:
    """bool (units, in_groups): which unit of layer ``l`` has non-zero weights from which input group."""
    info = net.info.layers[l]
    w = net.layer(l).weight.detach()
    if w.dim() == 4:
        return w.abs().sum(dim=(2, 3)) != 0
    return w.abs().reshape(info.units, info.in_groups, info.group_size).sum(dim=2) != 0


def _full(keeps: Sequence[torch.Tensor | None], sizes: Sequence[int], device) -> list[torch.Tensor]:
    return [torch.ones(n, dtype=torch.bool, device=device) if k is None else k.to(device=device, dtype=torch.bool)
            for k, n in zip(keeps, sizes)]


@torch.no_grad()
def _dependencies(conn: list[torch.Tensor], unit_alive: list[torch.Tensor], input_alive: list[torch.Tensor]):
    """Which units depend on the input and which are needed by the output.

    ``conn[l]`` (units, in_groups) says which inputs of layer l reach which of its units. Returns
    ``dep_out`` (per layer, units: the unit's output varies with the network's input), ``need_in``
    (per layer, in_groups: the input reaches the network's output) and ``need_out`` (per layer,
    units: the unit's output reaches the network's output).
    """
    n = len(conn)
    dep_out, need_in, need_out = [None] * n, [None] * n, [None] * n
    dep_in = input_alive[0]
    for l in range(n):
        if l:
            dep_in = dep_out[l - 1] & input_alive[l]
        dep_out[l] = unit_alive[l] & (conn[l] & dep_in.unsqueeze(0)).any(dim=1)
    need_out[n - 1] = torch.ones_like(unit_alive[n - 1])
    for l in range(n - 1, -1, -1):
        need_in[l] = input_alive[l] & (conn[l] & need_out[l].unsqueeze(1)).any(dim=0)
        if l:
            need_out[l - 1] = need_in[l] & unit_alive[l - 1]
    return dep_out, need_in, need_out


def plan_pruning(net: SwitchedNetwork, keep_units: Sequence[torch.Tensor | None],
                 keep_inputs: Sequence[torch.Tensor | None]) -> PrunePlan:
    """Dependencies and bias folding for the switch decisions ``keep_units``/``keep_inputs``.

    Args:
        net: the switched network (its weights decide the connectivity).
        keep_units: per layer (entries beyond the second-to-last layer are ignored; ``None``
            keeps all), whether the unit's parent switch survives.
        keep_inputs: per layer, whether the child switch of each input group survives.

    The masked network of these decisions is :meth:`SwitchedNetwork.masked`.
    """
    layers = net.info.layers
    n = len(layers)
    device = net.child[0].device
    unit_alive = _full(list(keep_units[: n - 1]) + [None] * (n - len(keep_units[: n - 1])),
                       [i.units for i in layers], device)
    unit_alive[-1] = torch.ones(layers[-1].units, dtype=torch.bool, device=device)
    input_alive = _full(keep_inputs, [i.in_groups for i in layers], device)
    for l in range(1, n):  # the child of a pruned parent is pruned (HARD coupling gives it gamma 0)
        input_alive[l] = input_alive[l] & unit_alive[l - 1]
    dep_out, need_in, need_out = _dependencies([connectivity(net, l) for l in range(n)], unit_alive, input_alive)
    keep_out = [dep_out[l] & need_out[l] for l in range(n - 1)] + [need_out[n - 1].clone()]
    # the last layer's units are the network's outputs: never constant, never folded
    constant_units = ([unit_alive[l] & need_out[l] & ~dep_out[l] for l in range(n - 1)]
                      + [torch.zeros_like(keep_out[-1])])
    removed = [{"pruned": int((~unit_alive[l]).sum()),
                "no_consumer": int((unit_alive[l] & ~need_out[l]).sum()) if l < n - 1 else 0,
                "constant": int(constant_units[l].sum()), "constant_kept": 0} for l in range(n)]
    shifts = _fold_constants(net, unit_alive, input_alive, constant_units, keep_out, removed)
    keep_in = [input_alive[0] & need_in[0]] + [keep_out[l - 1].clone() for l in range(1, n)]
    return PrunePlan(keep_units=keep_out, keep_inputs=keep_in, bias_shift=shifts, removed=removed)


def _fold_constants(net: SwitchedNetwork, unit_alive: list[torch.Tensor], input_alive: list[torch.Tensor],
                    constant_units: list[torch.Tensor], keep_out: list[torch.Tensor],
                    removed: list[dict[str, int]]) -> list[torch.Tensor]:
    """Per layer, the bias shift (units,) that stands in for the removed inputs' constant outputs.

    A removed unit whose contribution differs across a consumer's positions (zero padding at a
    conv's border) cannot be folded exactly: a constant unit is then kept (``keep_out`` and
    ``removed`` are updated in place).
    """
    layers = net.info.layers
    device = net.child[0].device
    # Run the masked network (eval, float64) on a zero input and read every layer's input.
    masked = net.masked(unit_alive, input_alive).double().eval()
    inputs: list[torch.Tensor] = []
    masked(torch.zeros((1,) + tuple(net.input_shape), dtype=torch.float64, device=device), capture=inputs)
    shifts = [torch.zeros(i.units, dtype=torch.float64, device=device) for i in layers]
    # From the output back: a constant unit of layer l that layer l+1 must keep is then already
    # among layer l's kept rows when its own constant inputs are checked for folding.
    for l in range(len(layers) - 1, 0, -1):
        info, layer = layers[l], masked.layer(l)
        gone = ~keep_out[l - 1]
        x = inputs[l][0]
        if info.group_size > 1:
            x = x.reshape(info.in_groups, info.group_size)
        active = gone & (x.reshape(info.in_groups, -1).abs().amax(dim=1) > 0)
        for j in torch.nonzero(active).flatten().tolist():
            contribution = _contribution(layer, x, j, info.group_size)  # (units, positions)
            rows = contribution[keep_out[l]]
            spread = (rows.amax(dim=1) - rows.amin(dim=1)).abs()
            if not bool((spread <= UNIFORM_RTOL * (1.0 + rows.abs().amax(dim=1))).all()):
                if not bool(constant_units[l - 1][j]):
                    raise AssertionError("a removed unit feeds a kept unit through non-zero weights")
                keep_out[l - 1][j] = True  # cannot be folded exactly: keep the constant unit
                removed[l - 1]["constant"] -= 1
                removed[l - 1]["constant_kept"] += 1
                continue
            shifts[l] += contribution[:, 0]
    return shifts


def _contribution(layer: nn.Module, x: torch.Tensor, j: int, group_size: int) -> torch.Tensor:
    """What input group ``j`` (all other inputs zero) adds to each output of ``layer``: (units, positions)."""
    if isinstance(layer, nn.Conv2d):
        only = torch.zeros_like(x).unsqueeze(0)
        only[0, j] = x[j]
        out = layer._conv_forward(only, layer.weight, None)[0]
        return out.reshape(out.shape[0], -1)
    w = layer.weight.reshape(layer.out_features, -1, group_size)[:, j, :]  # (units, group_size)
    values = x.reshape(-1, group_size)[j]
    return (w @ values).unsqueeze(1)


def _index(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask).flatten()


@torch.no_grad()
def _slim_layer(layer: nn.Module, rows: torch.Tensor, cols: torch.Tensor, shift: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` with output units ``rows``, input columns ``cols`` and ``shift`` added to its bias."""
    weight = layer.weight.detach()[rows][:, cols]
    has_shift = bool((shift[rows] != 0).any())
    bias = layer.bias is not None or has_shift
    kw = dict(device=weight.device, dtype=weight.dtype)
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(len(cols), len(rows), layer.kernel_size, stride=layer.stride, padding=layer.padding,
                        dilation=layer.dilation, bias=bias, padding_mode=layer.padding_mode, **kw)
    else:
        new = nn.Linear(len(cols), len(rows), bias=bias, **kw)
    new.weight.copy_(weight)
    if bias:
        base = layer.bias.detach()[rows].double() if layer.bias is not None else torch.zeros(len(rows), dtype=torch.float64,
                                                                                          device=weight.device)
        new.bias.copy_((base + shift[rows]).to(weight.dtype))
    new.weight.requires_grad_(layer.weight.requires_grad)  # a layer the user froze stays frozen
    if bias:  # a bias added for folded constants trains as the layer's weight does
        new.bias.requires_grad_((layer.bias if layer.bias is not None else layer.weight).requires_grad)
    new.train(layer.training)
    return new


@torch.no_grad()
def _slim_bn(bn: nn.Module, rows: torch.Tensor) -> nn.Module:
    new = copy.deepcopy(bn)
    new.num_features = len(rows)
    for name in ("weight", "bias"):
        p = getattr(bn, name)
        if p is not None:
            setattr(new, name, nn.Parameter(p.detach()[rows].clone(), requires_grad=p.requires_grad))
    for name in ("running_mean", "running_var"):
        b = getattr(bn, name)
        if b is not None:
            setattr(new, name, b[rows].clone())
    return new


@torch.no_grad()
def slim(net: SwitchedNetwork, plan: PrunePlan) -> SwitchedNetwork:
    """The smaller switched network of ``plan``: removed units gone, their constants folded.

    Surviving switches keep their values and HARD state (gamma, omega, C), so training can go
    on; :meth:`SwitchedNetwork.to_dense` folds them away at the end.
    """
    layers = net.info.layers
    if not bool(plan.keep_inputs[0].any()):
        raise UserError("pruning left no unit that reads the input: the network's output would be a constant; "
                        "prune less (a smaller lambda, or a larger min_units)")
    modules = list(net.steps)
    new_modules: dict[int, nn.Module] = {}
    for l, info in enumerate(layers):
        rows = _index(plan.keep_units[l])
        groups = _index(plan.keep_inputs[l])
        cols = (groups.unsqueeze(1) * info.group_size + torch.arange(info.group_size, device=groups.device)).flatten()
        new_modules[info.step] = _slim_layer(modules[info.step], rows, cols, plan.bias_shift[l])
        if info.bn is not None:
            new_modules[info.bn] = _slim_bn(modules[info.bn], rows)
    chain = [(name, new_modules.get(i, copy.deepcopy(m))) for i, (name, m) in enumerate(zip(net.names, modules))]
    first = layers[0].step
    keep0 = plan.keep_inputs[0]
    if not bool(keep0.all()):
        index = _index(keep0)
        if first > 0 and isinstance(chain[first - 1][1], InputSelect):
            old = chain[first - 1][1]
            chain[first - 1] = (chain[first - 1][0], InputSelect(old.num_inputs, old.index[index]))
        else:
            chain.insert(first, ("input_select", InputSelect(layers[0].in_groups, index.cpu())
                                 .to(keep0.device)))
    new = SwitchedNetwork(chain, net.input_shape)
    new.to(device=net.child[0].device)
    for l in range(len(layers)):
        new.child[l].copy_(net.child[l].detach()[plan.keep_inputs[l]])
        for kind in ("gamma", "omega", "C"):
            new.state(kind, "child", l).copy_(net.state(kind, "child", l)[plan.keep_inputs[l]])
        if l < len(layers) - 1:
            new.parent[l].copy_(net.parent[l].detach()[plan.keep_units[l]])
            for kind in ("gamma", "omega", "C"):
                new.state(kind, "parent", l).copy_(net.state(kind, "parent", l)[plan.keep_units[l]])
    new.num_updates.copy_(net.num_updates)
    new.train(net.training)
    return new


def prune_and_slim(net: SwitchedNetwork, keep_units, keep_inputs) -> tuple[SwitchedNetwork, PrunePlan]:
    """:func:`plan_pruning` then :func:`slim`."""
    plan = plan_pruning(net, keep_units, keep_inputs)
    return slim(net, plan), plan
