"""The NAS-Bench-201 cell: representation, conversions, enumeration and canonical form.

A cell is a DAG on 4 nodes (0 = input, 3 = output) with one operation on each of its
6 edges. naslib-bayes represents a cell as an *op-index tuple* ``cell: tuple[int, ...]`` of
length 6, ordered like the benchmark string:

    edge index:  0       1       2       3       4       5
    edge:        1<-0    2<-0    2<-1    3<-0    3<-1    3<-2

with op indices into :data:`OPS` (the benchmark's op order). Everything here is a pure
function of the cell; the integer *index* of a cell belongs to a loaded benchmark file
(see :class:`naslib_bayes.search_spaces.nasbench201.benchmark.Benchmark`).

NASLib encodes the same cell differently (op order skip, none, conv3x3, conv1x1, pool;
edge order 0->1, 0->2, 0->3, 1->2, 1->3, 2->3); :func:`to_naslib` / :func:`from_naslib`
convert losslessly.
"""

from __future__ import annotations

import itertools
import operator
import random
from typing import Iterable, Iterator, Sequence

import numpy as np

from naslib_bayes.errors import UserError

Cell = tuple[int, ...]

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE, SKIP, CONV1X1, CONV3X3, AVG_POOL = range(5)
NUM_OPS = len(OPS)

#: (source, target) of each edge, in benchmark-string order.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_EDGES = len(EDGES)
NUM_NODES = 4
NUM_CELLS = NUM_OPS**NUM_EDGES  # 15,625

# NASLib's op order and edge order (see module docstring).
NASLIB_OPS: tuple[str, ...] = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_OP_TO_NASLIB = tuple(NASLIB_OPS.index(name) for name in OPS)
_OP_FROM_NASLIB = tuple(OPS.index(name) for name in NASLIB_OPS)
# _EDGE_FROM_NASLIB[p] = our edge index of NASLib's p-th edge.
_EDGE_FROM_NASLIB = tuple(EDGES.index(edge) for edge in NASLIB_EDGES)

PARAMETER_FREE_OPS = frozenset({NONE, SKIP, AVG_POOL})


def validate(cell: Sequence[int]) -> Cell:
    """Return ``cell`` as a tuple after checking its length and op indices.

    An op index is an integer (numpy's too) or a float with an integral value; a bool, text
    (``"012340"`` is not six op indices) or a fractional value (``0.7`` from a float array) is
    refused, never truncated.
    """
    try:
        cell = tuple(_op_index(op) for op in cell)
    except (TypeError, ValueError):
        raise UserError(f"invalid NAS-Bench-201 cell {cell!r}: expected {NUM_EDGES} integer op indices") from None
    if len(cell) != NUM_EDGES or any(not 0 <= op < NUM_OPS for op in cell):
        raise UserError(f"invalid NAS-Bench-201 cell {cell!r}: expected {NUM_EDGES} op indices in 0..{NUM_OPS - 1}")
    return cell


def _op_index(op) -> int:
    """``op`` as an int; a ``ValueError`` for a bool, text or a non-integral number."""
    if isinstance(op, (bool, np.bool_)):
        raise ValueError(f"{op!r} is a bool")
    if isinstance(op, (str, bytes)):  # float() reads "3", so a string cell would pass digit by digit
        raise ValueError(f"{op!r} is text")
    try:
        return operator.index(op)
    except TypeError:
        value = float(op)
    if not value.is_integer():
        raise ValueError(f"{op!r} is not integral")
    return int(value)


def to_string(cell: Sequence[int]) -> str:
    """Benchmark string of a cell, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
    cell = validate(cell)
    groups = []
    for target in range(1, NUM_NODES):
        ops = [f"{OPS[cell[e]]}~{src}" for e, (src, dst) in enumerate(EDGES) if dst == target]
        groups.append("|" + "|".join(ops) + "|")
    return "+".join(groups)


def from_string(arch: str) -> Cell:
    """Parse a benchmark string; raises :class:`UserError` naming the string when malformed."""
    groups = arch.strip().split("+")
    cell = [None] * NUM_EDGES
    if len(groups) != NUM_NODES - 1:
        raise UserError(f"malformed NAS-Bench-201 architecture string {arch!r}: expected 3 '+'-separated nodes")
    for target, group in enumerate(groups, start=1):
        tokens = [t for t in group.split("|") if t]
        if len(tokens) != target or not (group.startswith("|") and group.endswith("|")):
            raise UserError(f"malformed NAS-Bench-201 architecture string {arch!r}: node {target} needs {target} inputs")
        for token in tokens:
            name, _, src = token.partition("~")
            if name not in OPS or not (src.isascii() and src.isdigit()) or int(src) >= target:
                raise UserError(f"malformed NAS-Bench-201 architecture string {arch!r}: bad edge {token!r}")
            cell[EDGES.index((int(src), target))] = OPS.index(name)
    if any(op is None for op in cell):
        raise UserError(f"malformed NAS-Bench-201 architecture string {arch!r}: repeated input")
    return tuple(cell)


def to_naslib(cell: Sequence[int]) -> Cell:
    """NASLib's op-index encoding (``NasBench201SearchSpace.get_hash()``) of a cell."""
    cell = validate(cell)
    return tuple(_OP_TO_NASLIB[cell[e]] for e in _EDGE_FROM_NASLIB)


def from_naslib(op_indices: Sequence[int]) -> Cell:
    """Inverse of :func:`to_naslib`."""
    naslib = validate(op_indices)
    cell = [0] * NUM_EDGES
    for position, edge in enumerate(_EDGE_FROM_NASLIB):
        cell[edge] = _OP_FROM_NASLIB[naslib[position]]
    return tuple(cell)


def parse(arch: str | Sequence[int]) -> Cell:
    """Accept a benchmark string or an op-index tuple (ours) and return the op-index tuple."""
    if isinstance(arch, str):
        return from_string(arch)
    return validate(arch)


def all_cells() -> Iterator[Cell]:
    """All 15,625 cells in lexicographic op-index order (not any benchmark's index order)."""
    return itertools.product(range(NUM_OPS), repeat=NUM_EDGES)


def neighbours(cell: Sequence[int]) -> list[Cell]:
    """The 24 cells that differ from ``cell`` on exactly one edge."""
    cell = validate(cell)
    return [
        cell[:e] + (op,) + cell[e + 1 :]
        for e in range(NUM_EDGES)
        for op in range(NUM_OPS)
        if op != cell[e]
    ]


def random_cell(rng: random.Random) -> Cell:
    """A uniformly random cell (any of the 15,625; the benchmark covers them all)."""
    return tuple(rng.randrange(NUM_OPS) for _ in range(NUM_EDGES))


def mutate(cell: Sequence[int], rng: random.Random) -> Cell:
    """A uniformly random one-edge mutation of ``cell``."""
    return rng.choice(neighbours(cell))


def live_edges(cell: Sequence[int]) -> tuple[bool, ...]:
    """Per edge: does it lie on an input-to-output path through non-``none`` edges?

    An edge whose source is unreachable from the input, or whose target cannot reach the
    output, contributes nothing to the cell's output.
    """
    cell = validate(cell)
    return live_edge_mask([op != NONE for op in cell])


def live_edge_mask(present: Sequence[bool]) -> tuple[bool, ...]:
    """Like :func:`live_edges` but for an arbitrary per-edge presence mask (length 6)."""
    reach_in = {0}
    for src, dst in EDGES:  # EDGES is in topological order of targets
        if present[EDGES.index((src, dst))] and src in reach_in:
            reach_in.add(dst)
    reach_out = {NUM_NODES - 1}
    for src, dst in reversed(EDGES):
        if present[EDGES.index((src, dst))] and dst in reach_out:
            reach_out.add(src)
    return tuple(bool(present[e]) and src in reach_in and dst in reach_out for e, (src, dst) in enumerate(EDGES))


def is_connected(cell: Sequence[int]) -> bool:
    """True when the output depends on the input through at least one path."""
    return any(live_edges(cell))


def op_counts(cell: Sequence[int]) -> dict[str, int]:
    """Number of edges carrying each op."""
    cell = validate(cell)
    return {name: sum(op == i for op in cell) for i, name in enumerate(OPS)}


def is_parameter_free(cell: Sequence[int]) -> bool:
    """True when no live edge carries a convolution (only none/skip/pool remain)."""
    return all(op in PARAMETER_FREE_OPS or not alive for op, alive in zip(validate(cell), live_edges(cell)))


# --------------------------------------------------------------------------------------
# Canonical form
# --------------------------------------------------------------------------------------
# The value of a node is a sum of terms; a term is the cell input "x" or ``op(term-sum)``.
# Canonicalisation applies three identities of the cell's computation:
#   * ``none`` contributes nothing, and any op applied to a node whose value is identically
#     zero contributes nothing that depends on the input. (Pooling of zero is exactly zero;
#     ReLU-conv-BN of zero is BN's learned shift, a per-channel constant. The key treats cells
#     as equal up to such learned constant offsets.)
#   * ``skip_connect`` passes its input's terms through unchanged (so sums flatten);
#   * addition is commutative: a node's terms form a sorted multiset.
# The key is the canonical string of the output node's sum; cells with equal keys compute the
# same function of the input, up to relabelling of weights and learned constant offsets.


def canonical_key(cell: Sequence[int]) -> str:
    """Canonical string of the function a cell computes; "0" for a cell with no input path."""
    cell = validate(cell)
    node_terms: list[tuple[str, ...]] = [("x",)]
    for target in range(1, NUM_NODES):
        terms: list[str] = []
        for e, (src, dst) in enumerate(EDGES):
            if dst != target or cell[e] == NONE or not node_terms[src]:
                continue
            if cell[e] == SKIP:
                terms.extend(node_terms[src])
            else:
                terms.append(f"{OPS[cell[e]]}({'+'.join(node_terms[src])})")
        node_terms.append(tuple(sorted(terms)))
    return "+".join(node_terms[-1]) or "0"


def group_by_canonical_key(cells: Iterable[Sequence[int]]) -> dict[str, list[Cell]]:
    """Partition cells into classes of equal :func:`canonical_key`."""
    classes: dict[str, list[Cell]] = {}
    for cell in cells:
        classes.setdefault(canonical_key(cell), []).append(tuple(cell))
    return classes
