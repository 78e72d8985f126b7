"""Feature encodings of NAS-Bench-201 cells for surrogate models.

The *path encoding* of BANANAS (White et al., AAAI 2021) describes a cell by the set of
input-to-output paths it contains, each path named by the sequence of operations along it. A
NB201 cell has four node-level paths from its input (node 0) to its output (node 3):

    0->3,   0->1->3,   0->2->3,   0->1->2->3

A path carries signal only when none of its edges is ``none``, so only the four other ops name
paths: 4 paths of length 1, 16 of length 2 and 64 of length 3, i.e. 84 binary features. Two
node-level paths with the same op sequence (0->1->3 and 0->2->3) set the same feature, as in
the paper, where a path is identified by its ops only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from naslib_bayes.search_spaces.nasbench201 import cell as nb201

#: Ops that can lie on a live path (every op but ``none``), in the order used for feature indices.
PATH_OPS: tuple[int, ...] = tuple(op for op in range(nb201.NUM_OPS) if op != nb201.NONE)
LONGEST_PATH = 3


def _node_paths() -> tuple[tuple[int, ...], ...]:
    """Edge indices of every input-to-output path of the cell DAG, shortest first."""
    edge_of = {edge: e for e, edge in enumerate(nb201.EDGES)}
    paths: list[tuple[int, ...]] = []

    def walk(node: int, edges: tuple[int, ...]) -> None:
        if node == nb201.NUM_NODES - 1:
            paths.append(edges)
            return
        for nxt in range(node + 1, nb201.NUM_NODES):
            walk(nxt, edges + (edge_of[(node, nxt)],))

    walk(0, ())
    return tuple(sorted(paths, key=len))


NODE_PATHS = _node_paths()
#: Offsets of the feature blocks of paths of length 1, 2, 3.
_OFFSETS = {length: sum(len(PATH_OPS) ** k for k in range(1, length)) for length in range(1, LONGEST_PATH + 1)}
PATH_ENCODING_DIM = sum(len(PATH_OPS) ** k for k in range(1, LONGEST_PATH + 1))  # 84
_POSITION = {op: i for i, op in enumerate(PATH_OPS)}


def path_feature_index(ops: Sequence[int]) -> int:
    """Feature index of a path given the ops along it (none of them ``none``)."""
    index = 0
    for op in ops:
        index = index * len(PATH_OPS) + _POSITION[op]
    return _OFFSETS[len(ops)] + index


def path_encoding(cell: Sequence[int]) -> np.ndarray:
    """Binary path encoding of one cell, shape (84,), dtype float32."""
    cell = nb201.validate(cell)
    features = np.zeros(PATH_ENCODING_DIM, dtype=np.float32)
    for edges in NODE_PATHS:
        ops = [cell[e] for e in edges]
        if nb201.NONE not in ops:
            features[path_feature_index(ops)] = 1.0
    return features


@lru_cache(maxsize=1)
def _all_path_encodings() -> dict[nb201.Cell, np.ndarray]:
    return {cell: path_encoding(cell) for cell in nb201.all_cells()}


def path_encodings(cells: Sequence[Sequence[int]]) -> np.ndarray:
    """Path encodings of many cells, shape (n, 84) (the table of all cells is built once); a cell
    :func:`path_encoding` refuses (a fractional or out-of-range op) is refused, never truncated."""
    table = _all_path_encodings()
    if not len(cells):
        return np.zeros((0, PATH_ENCODING_DIM), dtype=np.float32)
    return np.stack([table[nb201.validate(cell)] for cell in cells])
