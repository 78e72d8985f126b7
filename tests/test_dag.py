"""The ops-as-nodes DAG view used by graph encoders."""

from __future__ import annotations

import torch

from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201 import dag


def _arcs(data) -> set[tuple[int, int]]:
    return {tuple(map(int, a)) for a in data.edge_index.t()}


def test_arcs_follow_the_cell_edges():
    data = dag.to_dag((3, 1, 2, 0, 4, 3))
    arcs = _arcs(data)
    for e, (src, dst) in enumerate(nb201.EDGES):
        feeders = {0} if src == 0 else {1 + f for f, (_, t) in enumerate(nb201.EDGES) if t == src}
        assert {a for a, b in arcs if b == 1 + e} == feeders
    assert {a for a, b in arcs if b == 7} == {1 + e for e, (_, t) in enumerate(nb201.EDGES) if t == 3}
    assert all(a < b for a, b in arcs)  # node order is topological


def test_node_types_are_ops_between_input_and_output():
    data = dag.to_dag((3, 1, 2, 0, 4, 3))
    assert data.x.tolist() == [dag.INPUT_TYPE, 3, 1, 2, 0, 4, 3, dag.OUTPUT_TYPE]


def test_all_cells_give_distinct_graphs_and_batch_consistently():
    cells = list(nb201.all_cells())
    types = dag.node_type_matrix(cells)
    assert types.shape == (15625, 8)
    assert len({tuple(row) for row in types.tolist()}) == 15625
    batch = dag.batch_dags(cells[:3])
    assert torch.equal(batch.x.view(3, 8), types[:3])
    # graph b's nodes are 8b..8b+7, carrying the cell's own 10 arcs, and no arc joins two graphs
    assert batch.edge_index.shape == (2, 30)
    assert batch.batch.tolist() == [b for b in range(3) for _ in range(8)]
    own = _arcs(dag.to_dag(cells[0]))
    assert len(own) == 10
    assert _arcs(batch) == {(a + 8 * b, c + 8 * b) for b in range(3) for a, c in own}
