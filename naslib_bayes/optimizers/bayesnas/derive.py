"""From switch prior variances to a discrete architecture: entropy pruning plus repair.

The entropy criterion (see :mod:`~naslib_bayes.optimizers.bayesnas.hard_prior`) prunes every
switch whose prior variance ``gamma`` is at most ``1/(2 pi e)``; a pruned parent prunes its
edge, and node dependencies prune every edge that is not on an input-to-output path of
surviving edges. What survives is not always an architecture of the search space, so a
derivation *repairs* it where needed and records which decisions were repairs:

NAS-Bench-201 (:func:`derive_nb201`): one op per edge. When several ops survive on an edge
the one with the largest gamma is kept; when nothing connects the output to the input, the
input-to-output path of largest total gamma (edge gamma = its best op's coupled gamma) is
restored, each restored edge taking its largest-gamma op; paths through an edge masked in an
earlier round (gamma 0) come last. The result is always a connected
cell.

DARTS (:func:`derive_darts_cell`): each intermediate node keeps the two strongest surviving
inputs (strength = largest surviving op gamma; one edge per predecessor, so the two inputs
come from distinct predecessors) with their largest-gamma surviving op, never ``none``; a node
with fewer than two survivors is filled up with its strongest remaining inputs.

The gammas given to a derivation are every group's own, as the update computed them: an edge
that node dependencies kill is *not* given gamma 0 (liveness is recomputed here from the
gammas, exactly as :func:`~naslib_bayes.optimizers.bayesnas.hard_prior.hard_update` did), so
the repairs rank dead and pruned edges by their real gammas and the decisions report them.
Only switches masked in an earlier round have gamma 0.

Every switch gets a :class:`SwitchDecision`: ``decision`` is ``"entropy"`` when its final
state (kept or pruned) is what the entropy criterion with node dependencies decided, and
``"repair"`` when the derivation changed it. The reason of an entropy decision to prune is
``gamma at or below threshold`` (its own gamma), ``all ops pruned`` (a parent above the
threshold whose children all are not) or ``dead node (not on an input-to-output path)`` (above
the threshold, but its edge is dead by node dependencies).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from naslib_bayes.optimizers.bayesnas import hard_prior
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

ENTROPY = "entropy"
REPAIR = "repair"


@dataclass
class SwitchDecision:
    """The fate of one switch group.

    Attributes:
        edge: edge index in the cell.
        op: the op's name, or ``None`` for the parent switch (the edge itself).
        gamma: the group's own prior variance (children: after the HARD coupling), also on a
            dead edge.
        entropy: ``0.5 * log(2 pi e gamma)`` (None for gamma = 0, e.g. a masked switch).
        kept: whether the derived architecture contains it.
        decision: ``"entropy"`` or ``"repair"`` (see the module docstring).
        reason: a short explanation (``gamma above threshold``, ``dead node``, ...).
    """

    edge: int
    op: str | None
    gamma: float
    entropy: float | None
    kept: bool
    decision: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _entropy(gamma: float) -> float | None:
    return None if gamma <= 0 else 0.5 * math.log(2.0 * math.pi * math.e * gamma)


def _as_lists(gamma_parent, gamma_child) -> tuple[list[float], list[list[float]]]:
    """Plain float lists (derivation is scalar logic; lists are much faster than tensors)."""
    gp = torch.as_tensor(gamma_parent, dtype=torch.float64).detach().cpu().tolist()
    gc = torch.as_tensor(gamma_child, dtype=torch.float64).detach().cpu().tolist()
    if len(gc) != len(gp):
        raise ValueError(f"{len(gp)} parent gammas but {len(gc)} rows of child gammas")
    return gp, gc


def entropy_stage(gamma_parent, gamma_child, edges, inputs, outputs, threshold: float = hard_prior.ENTROPY_THRESHOLD):
    """Survivors of the entropy criterion with node dependencies.

    Returns ``(keep_child, live)``: per edge and op, whether the child is above the threshold
    on a live edge (a list of lists of bools), and per edge whether it is live.
    """
    gp, gc = _as_lists(gamma_parent, gamma_child)
    keep_c = [[g > threshold for g in row] for row in gc]
    present = [p > threshold and any(row) for p, row in zip(gp, keep_c)]
    live = hard_prior.live_edge_mask(edges, present, inputs, outputs)
    return [[k and alive for k in row] for row, alive in zip(keep_c, live)], live


def _paths(edges: Sequence[tuple[int, int]], sources: Sequence[int], sinks: Sequence[int]) -> list[list[int]]:
    """All source-to-sink paths as lists of edge indices (deterministic order)."""
    out_edges: dict[int, list[int]] = {}
    for e, (src, _) in enumerate(edges):
        out_edges.setdefault(src, []).append(e)
    paths: list[list[int]] = []

    def walk(node: int, path: list[int]) -> None:
        if node in sinks and path:
            paths.append(list(path))
        for e in out_edges.get(node, []):
            walk(edges[e][1], path + [e])

    for s in sources:
        walk(s, [])
    return paths


_NB201_PATHS = _paths(nb201.EDGES, (0,), (nb201.NUM_NODES - 1,))


def derive_nb201(
    gamma_parent,
    gamma_child,
    threshold: float = hard_prior.ENTROPY_THRESHOLD,
    child_ops: Sequence[int] = (nb201.SKIP, nb201.CONV1X1, nb201.CONV3X3, nb201.AVG_POOL),
) -> tuple[nb201.Cell, list[SwitchDecision]]:
    """Derive an NB201 cell from the gammas of one cell type.

    Args:
        gamma_parent: (6,) parent gammas, edges in benchmark-string order (not zeroed on
            dead edges: the path restore ranks by them).
        gamma_child: (6, K) coupled child gammas.
        threshold: the entropy threshold on gamma.
        child_ops: NB201 op index of each child switch.

    Returns the op-index tuple and one decision per switch (parents and children, edge by edge).
    """
    gp, gc = _as_lists(gamma_parent, gamma_child)
    edges, inputs, outputs = nb201.EDGES, (0,), (nb201.NUM_NODES - 1,)
    keep_c, live = entropy_stage(gp, gc, edges, inputs, outputs, threshold)
    strength = [max(row) for row in gc]
    final_live = list(live)
    restored: set[int] = set()
    if not any(live):
        present = [p > threshold and any(g > threshold for g in row) for p, row in zip(gp, gc)]
        # gamma 0 marks an edge pruned in an earlier round (no longer trained): a path through
        # it is taken only when no path of unpruned edges exists, however large its sum
        best = max(_NB201_PATHS, key=lambda path: (all(strength[e] > 0 for e in path),
                                                   sum(strength[e] for e in path)))
        restored = set(best)
        present = [p or e in restored for e, p in enumerate(present)]
        final_live = hard_prior.live_edge_mask(edges, present, inputs, outputs)
    cell = [nb201.NONE] * nb201.NUM_EDGES
    chosen: dict[int, int] = {}
    for e in range(nb201.NUM_EDGES):
        if not final_live[e]:
            continue
        survivors = [k for k, keep in enumerate(keep_c[e]) if keep]
        pool = survivors or list(range(len(gc[e])))
        k = max(pool, key=lambda j: (gc[e][j], -j))
        chosen[e] = k
        cell[e] = child_ops[k]
    decisions = _decisions(gp, gc, keep_c, live, final_live, chosen, [nb201.OPS[o] for o in child_ops], threshold,
                           restored_reason="repair: restored the input-to-output path of largest total gamma",
                           filled=restored)
    result = tuple(cell)
    assert nb201.is_connected(result), "derivation produced a disconnected cell"
    return result, decisions


def _decisions(gp, gc, keep_c, live, final_live, chosen, op_names, threshold, restored_reason, filled):
    decisions: list[SwitchDecision] = []
    for e in range(len(gp)):
        g = gp[e]
        decision, reason = _edge_decision(e, g, gc[e], live[e], final_live[e], threshold, restored_reason, filled)
        decisions.append(SwitchDecision(e, None, g, _entropy(g), bool(final_live[e]), decision, reason))
        for k in range(len(gc[e])):
            kept = chosen.get(e) == k
            decision, reason = _op_decision(gc[e][k], kept, keep_c[e][k], e in chosen, threshold)
            decisions.append(SwitchDecision(e, op_names[k], gc[e][k], _entropy(gc[e][k]), kept, decision, reason))
    return decisions


def _edge_decision(e, g, gc_e, live, final_live, threshold, restored_reason, filled) -> tuple[str, str]:
    """(decision, reason) of edge ``e``'s parent switch: the entropy stage's, or the repair's."""
    if final_live == live:
        if live:
            return ENTROPY, "gamma above threshold"
        if g <= threshold:
            return ENTROPY, "gamma at or below threshold"
        if not any(x > threshold for x in gc_e):
            return ENTROPY, "all ops pruned"
        return ENTROPY, "dead node (not on an input-to-output path)"
    if not final_live:
        return REPAIR, "repair: dropped"
    return REPAIR, restored_reason if e in filled else "repair: revived by a restored path"


def _op_decision(gk, kept, entropy_kept, edge_chosen, threshold) -> tuple[str, str]:
    """(decision, reason) of one op's child switch on an edge (``edge_chosen``: the edge keeps an op)."""
    if kept == entropy_kept:
        if kept:
            return ENTROPY, "gamma above threshold"
        if gk <= threshold:
            return ENTROPY, "gamma at or below threshold"
        return ENTROPY, "dead node (not on an input-to-output path)"
    if not entropy_kept:
        return REPAIR, "repair: largest-gamma op of a restored edge"
    if edge_chosen:
        return REPAIR, "repair: a larger-gamma op kept on this edge"
    return REPAIR, "repair: its edge was dropped"


# --------------------------------------------------------------------------------------
# DARTS space
# --------------------------------------------------------------------------------------
def darts_edges(steps: int = 4) -> tuple[tuple[int, int], ...]:
    """The DARTS cell's edges: for node j = 2..steps+1, one edge from every earlier node."""
    return tuple((src, j) for j in range(2, steps + 2) for src in range(j))


def derive_darts_cell(
    gamma_parent,
    gamma_child,
    op_names: Sequence[str],
    steps: int = 4,
    inputs_per_node: int = 2,
    threshold: float = hard_prior.ENTROPY_THRESHOLD,
    outputs: Sequence[int] | None = None,
) -> tuple[list[tuple[str, int]], list[int], list[SwitchDecision]]:
    """Derive one DARTS cell (normal or reduction) from the gammas of its cell type.

    Args:
        gamma_parent: (E,) parent gammas, E = 14 for 4 steps, edges as :func:`darts_edges`
            (not zeroed on dead edges: the fill-up ranks by them).
        gamma_child: (E, K) coupled child gammas of the non-zero ops ``op_names``.
        outputs: the intermediate nodes the search cell concatenates into its output
            (``CellTopology.outputs``: the last ``multiplier`` nodes); None: all of them.
            They decide which nodes are live, as in the update, and are the genotype's concat.

    Returns ``(genotype edges [(op, input node)...], concat nodes, decisions)``; each
    intermediate node gets ``inputs_per_node`` inputs from distinct predecessors.
    """
    gp, gc = _as_lists(gamma_parent, gamma_child)
    edges = darts_edges(steps)
    if len(gp) != len(edges):
        raise ValueError(f"{len(gp)} parent gammas for {len(edges)} DARTS edges")
    inputs = (0, 1)
    outputs = tuple(range(2, steps + 2)) if outputs is None else tuple(int(n) for n in outputs)
    if not outputs or any(not 2 <= n < steps + 2 for n in outputs):
        raise ValueError(f"DARTS cell outputs {outputs} are not intermediate nodes 2..{steps + 1}")
    keep_c, live = entropy_stage(gp, gc, edges, inputs, outputs, threshold)
    chosen: dict[int, int] = {}
    filled: set[int] = set()
    genotype: list[tuple[str, int]] = []
    for j in range(2, steps + 2):
        incoming = [e for e, (_, dst) in enumerate(edges) if dst == j]
        picked = _strongest_inputs(incoming, gc, keep_c, inputs_per_node, filled)
        for e in sorted(picked, key=lambda e: edges[e][0]):
            survivors = [k for k, keep in enumerate(keep_c[e]) if keep]
            pool = survivors or list(range(len(gc[e])))
            k = max(pool, key=lambda i: (gc[e][i], -i))
            chosen[e] = k
            genotype.append((op_names[k], edges[e][0]))
    final_live = [e in chosen for e in range(len(edges))]
    decisions = _decisions(gp, gc, keep_c, live, final_live, chosen, list(op_names), threshold,
                           restored_reason="repair: strongest remaining input of a node with too few survivors",
                           filled=filled)
    for d in decisions:  # dropping a surviving edge is the top-2 rule here
        if d.op is None and d.decision == REPAIR and not d.kept:
            d.reason = "repair: not among the node's two strongest inputs"
    return genotype, list(outputs), decisions


def _strongest_inputs(incoming: list[int], gc, keep_c, count: int, filled: set[int]) -> list[int]:
    """The ``count`` incoming edges of a node whose strongest surviving op has the largest gamma;
    too few survivors are filled up with the strongest other edges (added to ``filled``)."""
    surviving = [e for e in incoming if any(keep_c[e])]
    surviving.sort(key=lambda e: (-max(g for g, k in zip(gc[e], keep_c[e]) if k), e))
    picked = surviving[:count]
    if len(picked) < count:
        rest = sorted((e for e in incoming if e not in picked), key=lambda e: (-max(gc[e]), e))
        extra = rest[: count - len(picked)]
        filled.update(extra)
        picked += extra
    return picked


def repair_fraction(decisions: Sequence[SwitchDecision]) -> float:
    """Fraction of switch decisions that the repair step changed."""
    return sum(d.decision == REPAIR for d in decisions) / max(len(decisions), 1)
