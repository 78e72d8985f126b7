"""The HARD prior of BayesNAS as pure tensor functions.

BayesNAS (Zhou, Yang, Wang, Pan; ICML 2019) puts a hierarchical automatic relevance
determination (HARD) prior on the switches that scale the candidate operations of a
supernet: every switch ``s`` has a zero-mean Gaussian prior ``N(0, gamma)`` whose variance
``gamma`` is estimated from the data, a parent switch per edge ("the edge exists") and one
child switch per non-zero op on the edge. One architecture update is the re-weighted
group-lasso iteration

    H     <- H / lambda                       (lambda_origin for parents, lambda_child for children)
    C      = (1/gamma + H)^-1                 Laplace posterior variance, one per switch
    omega  = sqrt( sum_group | -C/gamma^2 + 1/gamma | )
    gamma  = ||s_group||_2 / omega
    gamma_child <- 1 / (1/gamma_child + 1/gamma_parent)       HARD coupling

where ``H`` is the diagonal Gauss-Newton curvature of the loss w.r.t. the switches and a
*group* is one (edge, op) switch stacked over the cells of one type (so ``gamma`` and
``omega`` are per group while ``H`` and ``C`` are per switch).

Pruning is the paper's entropy criterion. The quantity thresholded here is the *prior
variance gamma* of a switch (after the HARD coupling for child switches): a switch is pruned
when the differential entropy of its prior ``N(0, gamma)``,
``0.5 * log(2 pi e gamma)``, is non-positive, i.e. ``gamma <= 1 / (2 pi e) ~ 0.0585``.
(The posterior variance ``C`` is *not* thresholded: ``C`` is small exactly for switches
with large curvature, the ones the loss depends on most.) The paper states the criterion as
pruning when the entropy is non-positive; its exact formula could not be checked against the
paper's text here, so this follows the reviews' description of "an entropy-based criterion on
gamma" and the Gaussian prior's entropy.

Node dependencies: an edge only counts as alive when its source node is reachable from a
cell input through edges that survive the entropy test and its target node reaches a cell
output through them. Liveness is a separate boolean mask (:attr:`HardUpdate.live`): a dead
edge and its ops are pruned (:attr:`HardUpdate.keep_parent`, :attr:`HardUpdate.keep_child`),
but its gammas are *not* overwritten with 0, so they keep ranking it (repair of a derived
architecture, reported relevance) and, should the edge be kept in the supernet, the next
update starts from them (a zero gamma would give ``omega = inf`` and freeze it at 0).

Everything here is a pure function of tensors (float64 recommended), shared by the
supernet optimizer, the NASLib wrapper and network compression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

#: Prune threshold on gamma: entropy 0.5*log(2*pi*e*gamma) <= 0  <=>  gamma <= 1/(2*pi*e).
ENTROPY_THRESHOLD = 1.0 / (2.0 * math.pi * math.e)
#: omega is floored here so that a group without any curvature gets a huge but finite gamma.
OMEGA_FLOOR = 1e-12


def posterior_variance(gamma: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    """Laplace posterior variance ``C = (1/gamma + H)^-1`` of each switch.

    Args:
        gamma: prior variances, broadcastable to ``curvature`` (one per group).
        curvature: ``H`` per switch, already divided by lambda; non-negative.

    A switch with ``gamma == 0`` (pruned) has ``C == 0``.
    """
    gamma, curvature = torch.broadcast_tensors(torch.as_tensor(gamma, dtype=curvature.dtype), curvature)
    safe = torch.where(gamma > 0, gamma, torch.ones_like(gamma))
    return torch.where(gamma > 0, safe / (1.0 + safe * curvature), torch.zeros_like(gamma))


def reweight(gamma: torch.Tensor, posterior_var: torch.Tensor, group_dims: int | Sequence[int] = 0) -> torch.Tensor:
    """``omega = sqrt(sum over the group of |-C/gamma^2 + 1/gamma|)``.

    Args:
        gamma: one prior variance per group, shape = ``posterior_var``'s shape without
            ``group_dims``.
        posterior_var: ``C`` per switch; ``group_dims`` index the members of a group (the
            cells of one type).
        group_dims: dimensions of ``posterior_var`` summed over.

    Returns omega per group; a pruned group (``gamma == 0``) gets ``inf`` (infinite penalty).
    """
    dims = (group_dims,) if isinstance(group_dims, int) else tuple(group_dims)
    g = gamma
    for d in sorted(d % posterior_var.dim() for d in dims):
        g = g.unsqueeze(d)
    g = g.expand_as(posterior_var)
    safe = torch.where(g > 0, g, torch.ones_like(g))
    term = (-posterior_var / safe**2 + 1.0 / safe).abs()
    omega = term.sum(dim=dims).sqrt()
    return torch.where(gamma > 0, omega, torch.full_like(omega, math.inf))


def update_gamma(group_norm: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """``gamma = ||s_group||_2 / omega``; omega is floored at :data:`OMEGA_FLOOR`."""
    return group_norm / omega.clamp_min(OMEGA_FLOOR)


def group_norm(switches: torch.Tensor, group_dims: int | Sequence[int] = 0) -> torch.Tensor:
    """``||s_group||_2`` of each group (the l2 norm over ``group_dims``)."""
    dims = (group_dims,) if isinstance(group_dims, int) else tuple(group_dims)
    return torch.linalg.vector_norm(switches, ord=2, dim=dims)


def hard_coupling(gamma_child: torch.Tensor, gamma_parent: torch.Tensor) -> torch.Tensor:
    """``gamma_child <- 1/(1/gamma_child + 1/gamma_parent)`` (0 when either is 0).

    ``gamma_parent`` broadcasts against ``gamma_child`` (give it a trailing op axis).
    """
    gc, gp = torch.broadcast_tensors(gamma_child, gamma_parent)
    total = gc + gp
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where((gc > 0) & (gp > 0), gc * gp / safe, torch.zeros_like(gc))


def entropy(gamma: torch.Tensor) -> torch.Tensor:
    """Differential entropy ``0.5 * log(2 pi e gamma)`` of ``N(0, gamma)`` (-inf at gamma=0)."""
    return 0.5 * torch.log(2.0 * math.pi * math.e * gamma)


def entropy_keep(gamma: torch.Tensor) -> torch.Tensor:
    """True where the entropy criterion keeps a switch (entropy > 0, gamma > 1/(2 pi e))."""
    return gamma > ENTROPY_THRESHOLD


def live_edge_mask(
    edges: Sequence[tuple[int, int]],
    present: Sequence[bool] | torch.Tensor,
    inputs: Iterable[int],
    outputs: Iterable[int],
) -> list[bool]:
    """Node dependencies in a cell DAG: which present edges lie on an input-to-output path.

    Args:
        edges: (source, target) node pairs; nodes are numbered in topological order.
        present: per edge, whether it survives on its own.
        inputs: nodes fed from outside the cell.
        outputs: nodes read by the cell's output (NB201: node 3; DARTS: all intermediate
            nodes, which are concatenated).

    An edge is alive when it is present, its source is reachable from an input through
    present edges and its target reaches an output through present edges.
    """
    present = [bool(p) for p in (present.tolist() if isinstance(present, torch.Tensor) else present)]
    if len(present) != len(edges):
        raise ValueError(f"{len(present)} presence flags for {len(edges)} edges")
    order = sorted(range(len(edges)), key=lambda e: (edges[e][1], edges[e][0]))
    reach_in = set(inputs)
    for e in order:
        src, dst = edges[e]
        if present[e] and src in reach_in:
            reach_in.add(dst)
    reach_out = set(outputs)
    for e in reversed(order):
        src, dst = edges[e]
        if present[e] and dst in reach_out:
            reach_out.add(src)
    return [present[e] and edges[e][0] in reach_in and edges[e][1] in reach_out for e in range(len(edges))]


def ard_update(
    switches: torch.Tensor,
    curvature: torch.Tensor,
    gamma: torch.Tensor,
    lam: float,
    group_dims: int | Sequence[int] = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The re-weighted group-lasso step for one set of groups, without coupling or DAG.

    Args:
        switches: switch values; ``group_dims`` index the members of a group (e.g. the cells
            of one type, or nothing extra for one switch per channel).
        curvature: diagonal Gauss-Newton ``H`` per switch, same shape, not divided by lambda.
        gamma: current prior variance per group (``switches``'s shape without ``group_dims``).
        lam: the sparsity weight lambda of these groups.

    Returns ``(H / lambda, C, omega, new gamma)``. Network compression uses this directly on
    channel switches; :func:`hard_update` adds the parent/child coupling and node dependencies.
    """
    if lam <= 0:
        raise ValueError("lambda must be positive")
    h = curvature / lam
    dims = (group_dims,) if isinstance(group_dims, int) else tuple(group_dims)
    g = gamma
    for d in sorted(d % h.dim() for d in dims):
        g = g.unsqueeze(d)
    c = posterior_variance(g, h)
    omega = reweight(gamma, c, dims)
    return h, c, omega, update_gamma(group_norm(switches, dims), omega)


@dataclass
class HardUpdate:
    """Result of one architecture update of one cell type (see :func:`hard_update`).

    Shapes: ``n`` cells, ``E`` edges, ``K`` non-zero ops per edge.

    Attributes:
        curvature_parent, curvature_child: ``H / lambda`` per switch, (n, E) and (n, E, K).
        C_parent, C_child: Laplace posterior variances per switch, same shapes.
        omega_parent, omega_child: new re-weighting per group, (E,) and (E, K).
        gamma_parent, gamma_child: new prior variances per group, (E,) and (E, K); children
            after the HARD coupling with their parent's new gamma. Every group keeps its own
            gamma, dead edges included (they are *not* zeroed: see :attr:`live`).
        gamma_child_uncoupled: children before the coupling, (E, K).
        present: per edge, parent and at least one coupled child survive the entropy test.
        live: ``present`` after node dependencies (a present edge not on an input-to-output
            path of present edges is dead).
    """

    curvature_parent: torch.Tensor
    curvature_child: torch.Tensor
    C_parent: torch.Tensor
    C_child: torch.Tensor
    omega_parent: torch.Tensor
    omega_child: torch.Tensor
    gamma_parent: torch.Tensor
    gamma_child: torch.Tensor
    gamma_child_uncoupled: torch.Tensor
    present: list[bool]
    live: list[bool]

    @property
    def live_mask(self) -> torch.Tensor:
        """:attr:`live` as a boolean tensor (E,)."""
        return torch.tensor(self.live, dtype=torch.bool, device=self.gamma_parent.device)

    @property
    def keep_parent(self) -> torch.Tensor:
        """Parents that survive pruning: above the entropy threshold and on a live edge (E,)."""
        return entropy_keep(self.gamma_parent) & self.live_mask

    @property
    def keep_child(self) -> torch.Tensor:
        """Children that survive pruning: coupled gamma above the threshold on a live edge (E, K)."""
        return entropy_keep(self.gamma_child) & self.live_mask.unsqueeze(-1)


def hard_update(
    switch_parent: torch.Tensor,
    switch_child: torch.Tensor,
    curvature_parent: torch.Tensor,
    curvature_child: torch.Tensor,
    gamma_parent: torch.Tensor,
    gamma_child: torch.Tensor,
    lambda_origin: float,
    lambda_child: float,
    edges: Sequence[tuple[int, int]],
    inputs: Iterable[int],
    outputs: Iterable[int],
) -> HardUpdate:
    """One BayesNAS architecture update of one cell type.

    Args:
        switch_parent: (n, E) parent switch values (masked-out switches as 0).
        switch_child: (n, E, K) child switch values.
        curvature_parent, curvature_child: diagonal Gauss-Newton ``H`` per switch, same shapes
            (not yet divided by lambda).
        gamma_parent, gamma_child: current prior variances per group, (E,) and (E, K).
        lambda_origin, lambda_child: sparsity weights of the parent and child groups.
        edges, inputs, outputs: the cell DAG for node dependencies.

    The returned gammas are every group's own (children coupled to their parent's new gamma);
    which switches survive is :attr:`HardUpdate.keep_parent` / :attr:`HardUpdate.keep_child`
    (entropy criterion and node dependencies).
    """
    if lambda_origin <= 0 or lambda_child <= 0:
        raise ValueError("lambda_origin and lambda_child must be positive")
    hp, cp, omega_p, new_gp = ard_update(switch_parent, curvature_parent, gamma_parent, lambda_origin, 0)
    hc, cc, omega_c, new_gc = ard_update(switch_child, curvature_child, gamma_child, lambda_child, 0)
    coupled = hard_coupling(new_gc, new_gp.unsqueeze(-1))
    present = (entropy_keep(new_gp) & entropy_keep(coupled).any(dim=-1)).tolist()
    live = live_edge_mask(edges, present, inputs, outputs)
    # Dead edges are pruned through ``live`` (keep_parent / keep_child), not by zeroing gamma.
    return HardUpdate(
        curvature_parent=hp, curvature_child=hc, C_parent=cp, C_child=cc,
        omega_parent=omega_p, omega_child=omega_c, gamma_parent=new_gp, gamma_child=coupled,
        gamma_child_uncoupled=new_gc, present=present, live=live,
    )
