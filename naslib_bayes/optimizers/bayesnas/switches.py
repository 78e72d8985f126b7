"""Switch parameters and the per-group HARD state of BayesNAS.

Every cell of a supernet has its own switches: for each edge one *parent* switch (the edge
exists; its absence is the zero op) and one *child* switch per non-zero candidate op. A
*group* is one (edge) parent switch or one (edge, op) child switch stacked over all cells of
one type; the re-weighting ``omega`` and the prior variance ``gamma`` are per group, the
curvature ``H`` and the posterior variance ``C`` per switch.

:class:`SwitchBank` is an ``nn.Module`` holding, per cell type ``t`` with ``n`` cells,
``E`` edges and ``K`` non-zero ops,

* parameters ``parent[t]`` (n, E) and ``child[t]`` (n, E, K), initialised to 1;
* buffers ``gamma_parent_t`` (E,), ``gamma_child_t`` (E, K), ``omega_*`` (same),
  ``C_parent_t`` (n, E), ``C_child_t`` (n, E, K) (float64) and the pruning masks
  ``mask_parent_t`` (E,), ``mask_child_t`` (E, K).

It knows nothing about the network it is used in: a supernet scales op outputs with
:meth:`SwitchBank.scale_child` / :meth:`SwitchBank.scale_parent` (which go through
:func:`~naslib_bayes.optimizers.bayesnas.curvature.switch_mul`, so the curvature engine sees
them), and :meth:`SwitchBank.update` applies :func:`~naslib_bayes.optimizers.bayesnas.hard_prior.hard_update`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from naslib_bayes.optimizers.bayesnas import hard_prior
from naslib_bayes.optimizers.bayesnas.curvature import switch_mul


@dataclass(frozen=True)
class CellTopology:
    """What the switch state needs to know about one cell type.

    Attributes:
        name: the cell type (``normal``, ``reduce``); a valid Python identifier.
        num_cells: cells of this type in the supernet.
        edges: (source, target) node pairs, nodes numbered in topological order.
        ops: names of the non-zero candidate ops (one child switch each); the zero op is the
            parent switch.
        inputs: nodes fed from outside the cell.
        outputs: nodes the cell's output reads.
    """

    name: str
    num_cells: int
    edges: tuple[tuple[int, int], ...]
    ops: tuple[str, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.ops)


class SwitchBank(nn.Module):
    """Switches of every cell, grouped by cell type, with their HARD state.

    Args:
        topologies: one per cell type.
        init: initial switch value (1 in BayesNAS).
        gamma_init: initial prior variance of every group (before the first update).
    """

    def __init__(self, topologies: Sequence[CellTopology], init: float = 1.0, gamma_init: float = 1.0):
        super().__init__()
        self.topologies = {t.name: t for t in topologies}
        self.gamma_init = float(gamma_init)
        if not self.gamma_init > 0:
            raise ValueError("gamma_init must be positive")
        if len(self.topologies) != len(topologies):
            raise ValueError("cell type names must be distinct")
        self.parent = nn.ParameterDict()
        self.child = nn.ParameterDict()
        for t in topologies:
            n, e, k = t.num_cells, t.num_edges, t.num_ops
            self.parent[t.name] = nn.Parameter(torch.full((n, e), float(init)))
            self.child[t.name] = nn.Parameter(torch.full((n, e, k), float(init)))
            f64 = dict(dtype=torch.float64)
            self.register_buffer(f"gamma_parent_{t.name}", torch.full((e,), float(gamma_init), **f64))
            self.register_buffer(f"gamma_child_{t.name}", torch.full((e, k), float(gamma_init), **f64))
            self.register_buffer(f"omega_parent_{t.name}", torch.ones(e, **f64))
            self.register_buffer(f"omega_child_{t.name}", torch.ones(e, k, **f64))
            self.register_buffer(f"C_parent_{t.name}", torch.zeros(n, e, **f64))
            self.register_buffer(f"C_child_{t.name}", torch.zeros(n, e, k, **f64))
            self.register_buffer(f"mask_parent_{t.name}", torch.ones(e, dtype=torch.bool))
            self.register_buffer(f"mask_child_{t.name}", torch.ones(e, k, dtype=torch.bool))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._active_cache: dict[str, list[list[int]]] = {}

    # ---- state access ---------------------------------------------------------------------
    def state(self, kind: str, cell_type: str) -> torch.Tensor:
        """A state buffer, e.g. ``state("gamma_child", "normal")``."""
        return getattr(self, f"{kind}_{cell_type}")

    def active(self, cell_type: str, edge: int, op: int | None = None) -> bool:
        """Is the parent switch of ``edge`` (or the child switch ``op`` on it) unpruned?"""
        ops = self.active_ops(cell_type, edge)
        parent = bool(self.state("mask_parent", cell_type)[edge])
        return parent if op is None else op in ops

    def active_ops(self, cell_type: str, edge: int) -> list[int]:
        """Indices of the unpruned child ops on an edge ([] when the edge is pruned)."""
        cache = self._active_cache.get(cell_type)
        if cache is None:  # masks change rarely: read them once, not at every forward call
            mp = self.state("mask_parent", cell_type).tolist()
            mc = self.state("mask_child", cell_type).tolist()
            cache = [[k for k, on in enumerate(row) if on] if p else [] for p, row in zip(mp, mc)]
            self._active_cache[cell_type] = cache
        return cache[edge]

    def _load_from_state_dict(self, *args, **kwargs):
        self._active_cache = {}
        super()._load_from_state_dict(*args, **kwargs)

    # ---- forward helpers (used by supernets) -------------------------------------------------
    def scale_child(self, x: torch.Tensor, cell_type: str, cell: int, edge: int, op: int) -> torch.Tensor:
        """``x * child[cell_type][cell, edge, op]`` (recorded by the curvature engine)."""
        return switch_mul(x, self.child[cell_type], (cell, edge, op))

    def scale_parent(self, x: torch.Tensor, cell_type: str, cell: int, edge: int) -> torch.Tensor:
        """``x * parent[cell_type][cell, edge]``."""
        return switch_mul(x, self.parent[cell_type], (cell, edge))

    def mix(self, x: torch.Tensor, ops: Sequence[nn.Module], cell_type: str, cell: int, edge: int) -> torch.Tensor | None:
        """``s_parent * sum_k s_k * op_k(x)`` over the unpruned ops; ``None`` for a pruned edge."""
        total = None
        for k in self.active_ops(cell_type, edge):
            y = self.scale_child(ops[k](x), cell_type, cell, edge, k)
            total = y if total is None else total + y
        if total is None:
            return None
        return self.scale_parent(total, cell_type, cell, edge)

    # ---- loss ------------------------------------------------------------------------------
    def penalty(self, lambda_origin: float, lambda_child: float) -> torch.Tensor:
        """``lambda_o * sum_g ||omega_g s_g||_2 + lambda_c * sum_g ||omega_g s_g||_2`` over
        the unpruned parent and child groups (omega is 1 before the first update)."""
        total = self.parent[next(iter(self.topologies))].new_zeros(())
        for name in self.topologies:
            for kind, lam, params in (("parent", lambda_origin, self.parent[name]), ("child", lambda_child, self.child[name])):
                mask = self.state(f"mask_{kind}", name)
                if kind == "child":
                    mask = mask & self.state("mask_parent", name).unsqueeze(-1)
                if not bool(mask.any()):
                    continue
                omega = self.state(f"omega_{kind}", name).to(params.dtype)
                norms = torch.linalg.vector_norm(params[:, mask], ord=2, dim=0)
                total = total + lam * (omega[mask] * norms).sum()
        return total

    def switch_parameters(self) -> list[nn.Parameter]:
        return [*self.parent.values(), *self.child.values()]

    # ---- architecture update ---------------------------------------------------------------
    @torch.no_grad()
    def update(
        self,
        curvature: dict[str, tuple[torch.Tensor, torch.Tensor]],
        lambda_origin: float,
        lambda_child: float,
    ) -> dict[str, hard_prior.HardUpdate]:
        """Apply one HARD update per cell type and store the new gamma, omega and C.

        Args:
            curvature: ``{cell_type: (H_parent (n, E), H_child (n, E, K))}``, the diagonal
                Gauss-Newton curvature of the loss (not yet divided by lambda).

        Masked (pruned) switches enter as zeros and their groups get gamma 0 and omega 0 (they
        are out of the penalty). Every unmasked group stores its own new gamma, also on an
        edge that node dependencies make dead (that is :attr:`HardUpdate.live`, not a zero
        gamma), so a group kept in the supernet keeps a finite omega. An unmasked group whose
        stored gamma is not positive (a switch group of norm exactly 0, or a checkpoint of an
        older version that zeroed dead edges) restarts from ``gamma_init`` instead of being
        frozen at 0 by ``omega = inf``. The masks are not changed here; see :meth:`prune`.
        """
        updates = {}
        for name, topo in self.topologies.items():
            hp, hc = curvature[name]
            mp = self.state("mask_parent", name)
            mc = self.state("mask_child", name) & mp.unsqueeze(-1)
            sp = self.parent[name].detach().double() * mp
            sc = self.child[name].detach().double() * mc
            gp = self._prior_gamma(self.state("gamma_parent", name), mp)
            gc = self._prior_gamma(self.state("gamma_child", name), mc)
            upd = hard_prior.hard_update(
                sp, sc, hp.double() * mp, hc.double() * mc, gp, gc, lambda_origin, lambda_child,
                topo.edges, topo.inputs, topo.outputs,
            )
            self.state("gamma_parent", name).copy_(upd.gamma_parent)
            self.state("gamma_child", name).copy_(upd.gamma_child)
            self.state("omega_parent", name).copy_(torch.where(torch.isfinite(upd.omega_parent), upd.omega_parent,
                                                                torch.zeros_like(upd.omega_parent)))
            self.state("omega_child", name).copy_(torch.where(torch.isfinite(upd.omega_child), upd.omega_child,
                                                               torch.zeros_like(upd.omega_child)))
            self.state("C_parent", name).copy_(upd.C_parent)
            self.state("C_child", name).copy_(upd.C_child)
            updates[name] = upd
        self.num_updates += 1
        return updates

    def _prior_gamma(self, gamma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The gamma an update starts from: 0 where masked, ``gamma_init`` where unmasked but
        not positive, the stored gamma otherwise."""
        valid = torch.where(gamma > 0, gamma, torch.full_like(gamma, self.gamma_init))
        return torch.where(mask, valid, torch.zeros_like(gamma))

    @torch.no_grad()
    def prune(self, cell_type: str, keep_parent: torch.Tensor, keep_child: torch.Tensor) -> None:
        """Mask switches out for good: pruned switches are set to 0 and no longer computed."""
        self._active_cache = {}
        mp = self.state("mask_parent", cell_type)
        mc = self.state("mask_child", cell_type)
        mp &= keep_parent.to(mp.device)
        mc &= keep_child.to(mc.device) & mp.unsqueeze(-1)
        self.parent[cell_type].mul_(mp.to(self.parent[cell_type].dtype))
        self.child[cell_type].mul_(mc.to(self.child[cell_type].dtype))

    @torch.no_grad()
    def enforce_masks(self, momentum_state: dict | None = None) -> None:
        """Keep pruned switches at exactly zero (SGD momentum would otherwise move them).

        Args:
            momentum_state: an optimizer's ``state`` mapping; their momentum buffers are masked too.
        """
        for name in self.topologies:
            mp = self.state("mask_parent", name)
            mc = self.state("mask_child", name) & mp.unsqueeze(-1)
            if bool(mp.all()) and bool(mc.all()):
                continue
            for param, mask in ((self.parent[name], mp), (self.child[name], mc)):
                m = mask.to(param.dtype)
                param.mul_(m)
                buf = (momentum_state or {}).get(param, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(m)

    def gammas(self, cell_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (gamma_parent (E,), gamma_child (E, K)), zero where masked (pruned in an
        earlier round); edges dead by node dependencies keep their gammas."""
        mp = self.state("mask_parent", cell_type)
        mc = self.state("mask_child", cell_type) & mp.unsqueeze(-1)
        return self.state("gamma_parent", cell_type) * mp, self.state("gamma_child", cell_type) * mc


def curvature_by_type(bank: SwitchBank, sums: dict, reduction: str = "mean", num_samples: int = 1) -> dict:
    """Split a ``{parameter: H}`` mapping from the curvature engine into
    ``{cell_type: (H_parent, H_child)}`` for :meth:`SwitchBank.update`."""
    scale = 1.0 / max(num_samples, 1) if reduction == "mean" else 1.0
    out = {}
    for name in bank.topologies:
        hp = sums.get(bank.parent[name])
        hc = sums.get(bank.child[name])
        hp = no_curvature(bank.parent[name]) if hp is None else hp * scale
        hc = no_curvature(bank.child[name]) if hc is None else hc * scale
        out[name] = (hp, hc)
    return out


def no_curvature(switches: torch.Tensor) -> torch.Tensor:
    """Zero curvature for switches no loss term reached, where the update will meet them (their device)."""
    return torch.zeros(switches.shape, dtype=torch.float64, device=switches.device)


def iter_groups(topology: CellTopology) -> Iterable[tuple[int, int | None]]:
    """(edge, op) of every group of a cell type; ``op`` is None for the parent switch."""
    for e in range(topology.num_edges):
        yield e, None
        for k in range(topology.num_ops):
            yield e, k
