"""Ops-as-nodes DAG view of a NAS-Bench-201 cell, for graph encoders (as in D-VAE).

Each of the 6 edge operations becomes a node; an input node and an output node are added:

    node 0            input                     type INPUT_TYPE
    node 1 + e        the op on cell edge e     type = its op index (0..4, ``none`` included)
    node 7            output                    type OUTPUT_TYPE

Op node of cell edge (i -> j) receives an arc from every op node of an edge (k -> i), or
from the input node when i = 0; the output node receives arcs from the ops on edges into
cell node 3. Node indices are a topological order, so encoders can traverse 0..7 forwards
and 7..0 backwards. ``none`` ops stay as nodes of their own type, so the 15,625 cells map to
15,625 distinct graphs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch_geometric.data import Batch, Data

from naslib_bayes.search_spaces.nasbench201.cell import EDGES, NUM_EDGES, NUM_NODES, NUM_OPS, validate

INPUT_TYPE = NUM_OPS  # 5
OUTPUT_TYPE = NUM_OPS + 1  # 6
NUM_NODE_TYPES = NUM_OPS + 2  # 7
NUM_DAG_NODES = NUM_EDGES + 2  # 8


def _dag_arcs() -> torch.Tensor:
    """Arcs shared by every cell, as a (2, n_arcs) edge_index in topological order."""
    arcs = []
    for e, (src, _) in enumerate(EDGES):
        if src == 0:
            arcs.append((0, 1 + e))
        arcs.extend((1 + f, 1 + e) for f, (_, dst) in enumerate(EDGES) if dst == src)
    arcs.extend((1 + e, NUM_DAG_NODES - 1) for e, (_, dst) in enumerate(EDGES) if dst == NUM_NODES - 1)
    return torch.tensor(sorted(arcs, key=lambda a: (a[1], a[0])), dtype=torch.long).t().contiguous()


DAG_EDGE_INDEX = _dag_arcs()


def node_types(cell: Sequence[int]) -> torch.Tensor:
    """Node types of the DAG of ``cell``, shape (8,), dtype long."""
    return torch.tensor([INPUT_TYPE, *validate(cell), OUTPUT_TYPE], dtype=torch.long)


def to_dag(cell: Sequence[int]) -> Data:
    """torch-geometric ``Data`` with ``x`` (8,) node types and ``edge_index`` (2, 10)."""
    return Data(x=node_types(cell), edge_index=DAG_EDGE_INDEX.clone(), num_nodes=NUM_DAG_NODES)


def batch_dags(cells: Sequence[Sequence[int]]) -> Batch:
    """A torch-geometric ``Batch`` of the DAGs of ``cells`` (nodes of graph b at 8b..8b+7)."""
    return Batch.from_data_list([to_dag(cell) for cell in cells])


def node_type_matrix(cells: Sequence[Sequence[int]]) -> torch.Tensor:
    """Node types of many cells at once, shape (n_cells, 8); every DAG shares the same arcs."""
    ops = torch.as_tensor([validate(c) for c in cells], dtype=torch.long).reshape(-1, NUM_EDGES)
    ends = torch.empty(len(ops), 1, dtype=torch.long)
    return torch.cat([ends.fill_(INPUT_TYPE), ops, ends.clone().fill_(OUTPUT_TYPE)], dim=1)
