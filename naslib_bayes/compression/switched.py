"""A CNN chain with BayesNAS switches on its units, and the HARD prior over them.

How the BayesNAS hierarchy maps onto an ordinary CNN
-----------------------------------------------------
In a supernet cell every edge has a *parent* switch ("the edge exists"; its absence is the zero
op) and *child* switches, one per candidate op on the edge; the HARD coupling
``gamma_child <- 1/(1/gamma_child + 1/gamma_parent)`` makes a child at most as relevant as its
parent, and node dependencies remove edges that do not lie on an input-to-output path.

In a chain of conv/linear layers the thing to keep or remove is a *unit*: an output channel of
a convolution or an output neuron of a linear layer. Unit ``j`` of layer ``l`` plays the role
of an edge from layer ``l``'s input to its output:

* its **parent switch** ``s[l][j]`` scales the unit's output right after the unit's BatchNorm
  (after the layer itself when there is none): "the unit exists";
* its **child switch** ``t[l+1][j]`` scales the *next layer's input connections from it*, i.e.
  channel ``j`` of the next layer's input, right before the next layer (after ReLU, pooling and
  dropout; across a ``Flatten`` it scales the whole block of ``H*W`` features that channel
  ``j`` becomes): "the consumers use it".

One parent and its one child form the *structured group* of the unit; both are single
switches, so a group's norm is the switch's absolute value. The first layer's input features
(a linear layer's input pixels, a convolution's input channels) have child switches without a
parent, which lets compression drop inputs that no unit needs. The last layer's units are the
logits: they have no switches.

Per unit the same update as the search is applied (:func:`hard_prior.hard_update` with the
units of one layer as parallel edges of a one-step "cell", one child op each): the diagonal
Gauss-Newton curvature ``H`` of the loss w.r.t. each switch (:mod:`...bayesnas.curvature`),
``H/lambda``, the Laplace variance ``C``, the re-weighting ``omega``, the new ``gamma``, the
HARD coupling of the child to its parent, and the entropy criterion: a unit survives when both
its parent and its (coupled) child have ``gamma > 1/(2 pi e)``. The dependencies *between*
layers (a unit whose consumers are all pruned is pruned, a consumer input whose producer is
pruned is removed, constant outputs are folded into biases) are resolved on the network's
connectivity by :mod:`naslib_bayes.compression.prune`.

The training loss adds ``lambda * sum over groups of omega * |switch|`` over all parent and
child switches (the re-weighted group lasso of BayesNAS); switches get no weight decay.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from naslib_bayes.compression.trace import ChainInfo, InputSelect, analyse_chain
from naslib_bayes.optimizers.bayesnas import hard_prior
from naslib_bayes.optimizers.bayesnas.curvature import CurvatureResult, register_module_rule, switch_mul


def _input_select_curvature(module: InputSelect, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Curvature rule of :class:`InputSelect`: the selected inputs get their outputs' curvature."""
    gx = torch.zeros(x.shape, dtype=g.dtype, device=g.device)
    return gx.index_copy(1, module.index, g)


register_module_rule(InputSelect, _input_select_curvature)

_STATE_KINDS = ("gamma", "omega", "C")


@dataclass
class LayerUpdate:
    """Outcome of one HARD update for one layer.

    ``keep_units`` (units,) is None for the last layer; ``keep_inputs`` (in_groups,) says which
    input groups keep their child switch (for layers after the first it equals the previous
    layer's ``keep_units``). ``repaired_*`` count units (inputs) kept only to meet ``min_units``.
    ``unit_scores`` (units,) and ``input_scores`` (in_groups,) are the gammas the entropy
    criterion compared with its threshold (a unit's coupled child gamma; the first layer's
    input gammas, None for later layers): the relevance by which pruned units are ranked.
    """

    keep_units: torch.Tensor | None
    keep_inputs: torch.Tensor
    repaired_units: int = 0
    repaired_inputs: int = 0
    unit_scores: torch.Tensor | None = None
    input_scores: torch.Tensor | None = None


class SwitchedNetwork(nn.Module):
    """A chain of modules with a parent switch per unit and a child switch per layer input.

    Args:
        chain: ``(name, module)`` pairs (or modules) in execution order, e.g. from
            :func:`~naslib_bayes.compression.trace.trace_chain`; they are deep-copied.
        input_shape: shape of one input sample, e.g. (1, 28, 28).
        gamma_init: prior variance of every group before the first update.

    Attributes:
        steps: the chain's modules (``nn.ModuleList``).
        parent: per layer but the last, switches (units,), initialised to 1.
        child: per layer, switches (in_groups,), initialised to 1.
        info: the :class:`~naslib_bayes.compression.trace.ChainInfo` of the chain.

    Buffers (float64) ``{gamma,omega,C}_{parent,child}_{l}`` hold the HARD state of layer ``l``.
    """

    def __init__(self, chain: Sequence, input_shape: Sequence[int], gamma_init: float = 1.0):
        super().__init__()
        named = [(item if isinstance(item, tuple) else (f"{i}", item)) for i, item in enumerate(chain)]
        self.names = [name for name, _ in named]
        self.steps = nn.ModuleList([copy.deepcopy(m) for _, m in named])
        self.info: ChainInfo = analyse_chain(list(zip(self.names, self.steps)), input_shape)
        layers = self.info.layers
        ref = next(self.steps.parameters())
        self.parent = nn.ParameterList(
            [nn.Parameter(torch.ones(info.units, dtype=ref.dtype, device=ref.device)) for info in layers[:-1]])
        self.child = nn.ParameterList(
            [nn.Parameter(torch.ones(info.in_groups, dtype=ref.dtype, device=ref.device)) for info in layers])
        f64 = dict(dtype=torch.float64, device=ref.device)
        for l, info in enumerate(layers):
            sizes = {"child": info.in_groups}
            if l < len(layers) - 1:
                sizes["parent"] = info.units
            for role, n in sizes.items():
                self.register_buffer(f"gamma_{role}_{l}", torch.full((n,), float(gamma_init), **f64))
                self.register_buffer(f"omega_{role}_{l}", torch.ones(n, **f64))
                self.register_buffer(f"C_{role}_{l}", torch.zeros(n, **f64))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._layer_at = {info.step: l for l, info in enumerate(layers)}
        self._parent_after = {info.switch_after: l for l, info in enumerate(layers[:-1])}

    # ---- structure --------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.info.num_layers

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.info.input_shape

    def layer(self, l: int) -> nn.Module:
        return self.steps[self.info.layers[l].step]

    def layer_name(self, l: int) -> str:
        return self.names[self.info.layers[l].step]

    def bn(self, l: int) -> nn.Module | None:
        index = self.info.layers[l].bn
        return None if index is None else self.steps[index]

    def state(self, kind: str, role: str, l: int) -> torch.Tensor:
        """A HARD state buffer, e.g. ``state("gamma", "parent", 0)``."""
        return getattr(self, f"{kind}_{role}_{l}")

    def widths(self) -> list[int]:
        """Units of every layer."""
        return [info.units for info in self.info.layers]

    def switch_parameters(self) -> list[nn.Parameter]:
        return [*self.parent, *self.child]

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.steps.parameters())

    # ---- forward ----------------------------------------------------------------------------
    def apply_child(self, x: torch.Tensor, l: int) -> torch.Tensor:
        """``x`` (the input of layer ``l``) scaled by the layer's child switches."""
        info = self.info.layers[l]
        if info.group_size == 1:
            return switch_mul(x, self.child[l], dim=1)
        n = x.shape[0]
        grouped = x.reshape(n, info.in_groups, info.group_size)
        return switch_mul(grouped, self.child[l], dim=1).reshape(n, -1)

    def forward(self, x: torch.Tensor, capture: list | None = None) -> torch.Tensor:
        """Logits; with ``capture`` a list, the input of every layer (after its child switches)
        is appended to it."""
        for i, module in enumerate(self.steps):
            l = self._layer_at.get(i)
            if l is not None:
                x = self.apply_child(x, l)
                if capture is not None:
                    capture.append(x)
            x = module(x)
            l = self._parent_after.get(i)
            if l is not None:
                x = switch_mul(x, self.parent[l], dim=1)
        return x

    # ---- loss ---------------------------------------------------------------------------------
    def unit_costs(self) -> tuple[list[float], list[float]]:
        """Parameters one switch group controls, per layer: (parents, children).

        A unit of layer ``l`` owns its row of the layer (weights, bias, BatchNorm affine) and its
        columns in layer ``l+1``; its parent and its child switch both get that total. An input
        group of the first layer owns its columns there. Units of one layer all cost the same.
        """
        layers = self.info.layers
        cols, rows = [], []
        for l, info in enumerate(layers):
            layer = self.layer(l)
            cols.append(layer.weight.numel() / info.in_groups)
            row = layer.weight.numel() / info.units + (1 if layer.bias is not None else 0)
            bn = self.bn(l)
            if bn is not None and bn.affine:
                row += 2
            rows.append(row)
        unit = [rows[l] + cols[l + 1] for l in range(len(layers) - 1)]
        return unit, [cols[0]] + unit

    def layer_lambdas(self, lam: float, reference_cost: float | None = None,
                      power: float = 1.0) -> tuple[list[float], list[float]]:
        """lambda per layer for (parents, children).

        With ``reference_cost`` None every group gets ``lam``. Otherwise a group gets
        ``lam * (cost / reference_cost) ** power`` (cost from :meth:`unit_costs`): with power 1
        the group lasso charges each switch for the parameters it keeps alive, so that a
        convolution channel feeding an 800-wide linear layer is pushed harder than a single
        neuron; power 0.5 is the usual group-lasso weight, the square root of the group's size.
        """
        parent_cost, child_cost = self.unit_costs()
        if reference_cost is None:
            return [lam] * len(parent_cost), [lam] * len(child_cost)
        scale = lambda c: lam * (c / reference_cost) ** power  # noqa: E731
        return [scale(c) for c in parent_cost], [scale(c) for c in child_cost]

    def mean_unit_cost(self) -> float:
        """Mean of :meth:`unit_costs` over all switches (the reference of cost-scaled lambdas)."""
        parent_cost, child_cost = self.unit_costs()
        total = sum(c * p.numel() for c, p in zip(parent_cost, self.parent))
        total += sum(c * p.numel() for c, p in zip(child_cost, self.child))
        return total / sum(p.numel() for p in self.switch_parameters())

    @staticmethod
    def _per_layer(lam, n: int) -> list[float]:
        return list(lam) if isinstance(lam, (list, tuple)) else [float(lam)] * n

    def penalty(self, lam) -> torch.Tensor:
        """``lam * sum over groups of omega * |switch|`` (every group is one switch).

        ``lam`` is a float or the pair of per-layer lists from :meth:`layer_lambdas`.
        """
        lam_p, lam_c = lam if isinstance(lam, tuple) else (lam, lam)
        total = self.child[0].new_zeros(())
        for role, params, lams in (("parent", self.parent, self._per_layer(lam_p, len(self.parent))),
                                   ("child", self.child, self._per_layer(lam_c, len(self.child)))):
            for l, s in enumerate(params):
                omega = self.state("omega", role, l).to(s.dtype)
                total = total + lams[l] * (omega * s.abs()).sum()
        return total

    @torch.no_grad()
    def proximal_step(self, step) -> None:
        """Soft-threshold every switch by ``step * omega``: the proximal map of
        ``step * sum omega |s|`` (switches that cross zero become exactly zero).

        ``step`` is a float or a pair of per-layer lists (learning rate times lambdas).
        """
        step_p, step_c = step if isinstance(step, tuple) else (step, step)
        for role, params, steps in (("parent", self.parent, self._per_layer(step_p, len(self.parent))),
                                    ("child", self.child, self._per_layer(step_c, len(self.child)))):
            for l, s in enumerate(params):
                threshold = steps[l] * self.state("omega", role, l).to(s.dtype)
                s.copy_(s.sign() * (s.abs() - threshold).clamp_min(0))

    @torch.no_grad()
    def rebalance(self) -> None:
        """Put every layer's switches on a common scale, without changing the network's function.

        A switch and the weights around it can trade scale freely (ReLU and max-pooling are
        positively homogeneous): training with the sparsity term shrinks the switches while the
        weights grow, and the prior variances ``gamma``, which the entropy criterion compares
        with a fixed threshold, would then follow that drift instead of the units' relevance.
        So before every HARD update the scale of each unit is moved into its switch and every
        layer's live switches (nonzero switch and norm) are brought back to a root mean square of 1
        (their initial value), the others left as they are:

        * child switches: the *gain* of input group ``j`` is ``|t_j|`` times the norm of the
          layer's weight columns reading it;
        * parent switches: the gain of unit ``j`` is ``|s_j|`` times ``|weight_j|`` of its
          BatchNorm or, without BatchNorm, the norm of the layer's row ``j`` (weights and bias);

        each switch becomes ``sign * gain / rms(gains of its layer)`` and the weights are divided
        by the same factor. Exact up to rounding (the factors are positive); a unit with a zero
        norm is left alone. Within a layer only the units' shares of its scale matter then.
        """
        for l, info in enumerate(self.info.layers):
            layer = self.layer(l)
            w = layer.weight
            factor = _balance(self.child[l], w.reshape(info.units, info.in_groups, -1).norm(dim=(0, 2)))
            # scaled in the weight's own shape: a reshape of a channels-last weight is a copy
            per_column = factor.repeat_interleave(info.group_size) if w.dim() == 2 else factor
            w.div_(per_column.view(1, -1, *([1] * (w.dim() - 2))).to(w.dtype))
            if l == self.num_layers - 1:
                continue
            bn = self.bn(l)
            if bn is not None:
                if not bn.affine:
                    continue
                factor = _balance(self.parent[l], bn.weight.abs())
                bn.weight.div_(factor)
                bn.bias.div_(factor)
            else:
                sq = w.reshape(info.units, -1).square().sum(dim=1)
                if layer.bias is not None:
                    sq = sq + layer.bias.square()
                factor = _balance(self.parent[l], sq.sqrt())
                w.div_(factor.view(-1, *([1] * (w.dim() - 1))))
                if layer.bias is not None:
                    layer.bias.div_(factor)

    @torch.no_grad()
    def reinitialise(self, seed: int) -> None:
        """Fresh weights for the same architecture: every module's own initialisation (seeded,
        without touching the global random state) and switches back to 1. The HARD state
        (gamma, omega, C, ``num_updates``) stays as the last update left it: scratch retraining,
        which calls this after pruning, uses no sparsity term and makes no further update."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + 7919)
            for module in self.steps.modules():
                if hasattr(module, "reset_parameters"):  # BatchNorm's resets its running statistics too
                    module.reset_parameters()
        for switch in self.switch_parameters():
            switch.fill_(1.0)

    # ---- the HARD update ----------------------------------------------------------------------
    def curvature(self, result: CurvatureResult, reduction: str = "mean") -> tuple[list, list]:
        """Per-switch curvature from a :func:`gauss_newton_diagonal` result: (parents, children)."""
        return ([result.get(p, reduction) for p in self.parent], [result.get(c, reduction) for c in self.child])

    @torch.no_grad()
    def hard_update(self, curvature_parent: Sequence[torch.Tensor], curvature_child: Sequence[torch.Tensor],
                    lam, min_units: int = 1) -> list[LayerUpdate]:
        """One BayesNAS update of every group; stores gamma, omega and C; returns the survivors.

        Args:
            curvature_parent, curvature_child: diagonal Gauss-Newton ``H`` per switch (not yet
                divided by ``lam``), as from :meth:`curvature`.
            lam: the sparsity weight (lambda of the parent and of the child groups), a float or
                the pair of per-layer lists from :meth:`layer_lambdas`.
            min_units: each layer keeps at least this many units (and the first layer as many
                inputs); extra survivors are taken by largest coupled gamma and counted as
                repairs.
        """
        layers = self.info.layers
        lam_p, lam_c = lam if isinstance(lam, tuple) else (lam, lam)
        lam_p, lam_c = self._per_layer(lam_p, len(self.parent)), self._per_layer(lam_c, len(self.child))
        updates: list[LayerUpdate] = []
        # First layer's inputs: children without a parent (no coupling).
        t0 = self.child[0].detach().double().abs()
        h0 = curvature_child[0].double() / lam_c[0]
        g0 = self.state("gamma", "child", 0)
        c0 = hard_prior.posterior_variance(g0, h0)
        omega0 = hard_prior.reweight(g0, c0.unsqueeze(0), 0)
        new_g0 = hard_prior.update_gamma(t0, omega0)
        keep0, rep0 = _repair(hard_prior.entropy_keep(new_g0), new_g0, min_units)
        self._store("child", 0, new_g0, omega0, c0)
        updates.append(LayerUpdate(None, keep0, repaired_inputs=rep0, input_scores=new_g0.clone()))
        for l in range(len(layers) - 1):
            s = self.parent[l].detach().double().abs()
            t = self.child[l + 1].detach().double().abs()
            e = s.numel()
            upd = hard_prior.hard_update(
                s.unsqueeze(0), t.view(1, e, 1),
                curvature_parent[l].double().unsqueeze(0), curvature_child[l + 1].double().view(1, e, 1),
                self.state("gamma", "parent", l), self.state("gamma", "child", l + 1).view(e, 1),
                lam_p[l], lam_c[l + 1], [(0, 1)] * e, [0], [1],
            )
            keep = torch.tensor(upd.live, dtype=torch.bool, device=s.device)
            # score of every unit had it stayed alive: its coupled gamma before dead units were zeroed
            raw_parent = hard_prior.update_gamma(s, upd.omega_parent)
            score = hard_prior.hard_coupling(upd.gamma_child_uncoupled.view(-1), raw_parent)
            keep, repaired = _repair(keep, score, min_units)
            gamma_parent = torch.where(keep, raw_parent, torch.zeros_like(raw_parent))
            gamma_child = torch.where(keep, score, torch.zeros_like(score))
            self._store("parent", l, gamma_parent, upd.omega_parent, upd.C_parent.view(-1))
            self._store("child", l + 1, gamma_child, upd.omega_child.view(-1), upd.C_child.view(-1))
            updates[l].keep_units = keep
            updates[l].repaired_units = repaired
            updates[l].unit_scores = score  # coupled: never above the parent's gamma
            updates.append(LayerUpdate(None, keep.clone()))
        self.num_updates += 1
        return updates

    def _store(self, role: str, l: int, gamma, omega, C) -> None:
        self.state("gamma", role, l).copy_(gamma)
        self.state("omega", role, l).copy_(torch.where(torch.isfinite(omega), omega, torch.zeros_like(omega)))
        self.state("C", role, l).copy_(C)

    # ---- views --------------------------------------------------------------------------------
    @torch.no_grad()
    def masked(self, keep_units: Sequence[torch.Tensor | None], keep_inputs: Sequence[torch.Tensor]) -> "SwitchedNetwork":
        """A copy whose pruned switches are 0: the reference a slimmed network must reproduce.

        ``keep_units[l]`` (units,) for every layer but the last (``None`` entries keep all),
        ``keep_inputs[l]`` (in_groups,) for every layer.
        """
        net = copy.deepcopy(self)
        for l, keep in enumerate(keep_units[: self.num_layers - 1]):
            if keep is not None:
                net.parent[l].mul_(keep.to(net.parent[l].dtype))
        for l, keep in enumerate(keep_inputs):
            if keep is not None:
                net.child[l].mul_(keep.to(net.child[l].dtype))
        return net

    @torch.no_grad()
    def to_dense(self) -> nn.Sequential:
        """The network with every switch folded into the weights (same function, no switches).

        A parent switch scales its BatchNorm's affine parameters (a BatchNorm without affine
        parameters gets them) or, without BatchNorm, its layer's weight and bias rows; a child
        switch scales the input columns of its layer.
        """
        modules = [copy.deepcopy(m) for m in self.steps]
        for l, info in enumerate(self.info.layers):
            layer = modules[info.step]
            cols = self.child[l].detach().repeat_interleave(info.group_size)
            if isinstance(layer, nn.Conv2d):
                layer.weight.mul_(cols.view(1, -1, 1, 1))
            else:
                layer.weight.mul_(cols.view(1, -1))
            if l == self.num_layers - 1:
                continue
            s = self.parent[l].detach()
            if info.bn is not None:
                modules[info.bn] = _scaled_bn(modules[info.bn], s)
            else:
                layer.weight.mul_(s.view(-1, *([1] * (layer.weight.dim() - 1))))
                if layer.bias is not None:
                    layer.bias.mul_(s)
        dense = nn.Sequential(*modules)
        dense.train(self.training)
        return dense


def _scaled_bn(bn: nn.modules.batchnorm._BatchNorm, s: torch.Tensor) -> nn.Module:
    """``s * bn(x)`` as one BatchNorm (made affine if it was not)."""
    if not bn.affine:
        new = type(bn)(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=True,
                       track_running_stats=bn.track_running_stats).to(device=s.device, dtype=s.dtype)
        new.load_state_dict(bn.state_dict(), strict=False)
        new.weight.copy_(s)
        new.bias.zero_()
        new.train(bn.training)
        return new
    bn.weight.mul_(s)
    bn.bias.mul_(s)
    return bn


def _balance(switch: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Scale ``switch`` in place to ``sign * |switch| * norm / rms(|switch| * norm)``; returns the
    factor applied (1 where the norm is 0), by which the weights must be divided."""
    gain = switch.detach().abs() * norm
    live = (norm > 0) & (gain > 0)
    if not bool(live.any()):
        return torch.ones_like(norm)
    rms = gain[live].square().mean().sqrt()
    factor = torch.where(live, norm / rms, torch.ones_like(norm))
    switch.mul_(factor.to(switch.dtype))
    return factor


def _repair(keep: torch.Tensor, score: torch.Tensor, min_units: int) -> tuple[torch.Tensor, int]:
    """Keep at least ``min_units`` entries (the largest scores among the rest)."""
    have = int(keep.sum())
    need = min(int(min_units), keep.numel()) - have
    if need <= 0:
        return keep, 0
    candidates = torch.where(keep, torch.full_like(score, -torch.inf), score)
    keep = keep.clone()
    keep[candidates.topk(need).indices] = True
    return keep, need
