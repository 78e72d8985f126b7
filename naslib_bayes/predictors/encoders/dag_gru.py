"""D-VAE-style bidirectional gated-GRU encoder of cell DAGs (the architecture encoder psi).

A DAG is a torch-geometric graph whose node indices are a topological order within each graph
(see :mod:`naslib_bayes.search_spaces.nasbench201.dag`). One GRU visits the nodes forwards: the
state of node v is ``GRU(onehot(type_v), sum over arcs u->v of sigmoid(W_g h_u + b_g) * (W_m h_u + b_m))``
(D-VAE's message map has no bias b_m; here gate and message come from one linear layer with a bias);
a second GRU, with its own gates, visits them backwards over the reversed arcs. The encoding of
a graph is a linear map of [forward state of its last node, backward state of its first node],
so every op reaches the encoding through both directions.

Batching: step ``t`` updates the ``t``-th node of every graph at once; its incoming messages are
summed over the batch's arcs by torch-geometric's sum aggregation. Within a step, nodes whose state
must be equal -- same type, same multiset of predecessor states -- are merged first (hash-consing),
so the GRU runs once per distinct sub-DAG rather than once per node. Cells of NB201 share their
topology and differ only in ops, so most early sub-DAGs repeat: all 15,625 cells need about
16,000 GRU updates per direction instead of 125,000. The result is identical to visiting every
node (the merge only skips recomputing equal values).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn.aggr import SumAggregation

from naslib_bayes.predictors.seeding import reset_parameters_
from naslib_bayes.search_spaces.nasbench201 import dag


class SumMessages(nn.Module):
    """Sum of source messages over the arcs of a bipartite (visited -> current) graph.

    torch-geometric's sum aggregation, the scatter that its ``MessagePassing(aggr="add")`` runs,
    called directly: a ``MessagePassing`` subclass makes torch-geometric write a generated module
    into the temporary folder once per process, and nothing ever deletes it.
    """

    def __init__(self):
        super().__init__()
        self.aggregate = SumAggregation()

    def forward(self, messages: torch.Tensor, edge_index: torch.Tensor, num_targets: int) -> torch.Tensor:
        """``messages`` (n_sources, d), ``edge_index`` (2, n_arcs) -> (num_targets, d)."""
        sources, targets = edge_index
        return self.aggregate(messages.index_select(0, sources), index=targets, dim_size=num_targets)


class DagGRUEncoder(nn.Module):
    """Architecture encoder psi: a torch-geometric batch of DAGs -> (n_graphs, out_dim).

    Args:
        num_node_types: node-type vocabulary size (7 for NB201: 5 ops, input, output).
        hidden: GRU state size (64 by default; the paper uses 512).
        out_dim: encoding size L.
        generator: draws the initial weights, so that construction never depends on torch's
            global random state.
    """

    def __init__(self, num_node_types: int = dag.NUM_NODE_TYPES, hidden: int = 64, out_dim: int = 16,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.num_node_types, self.hidden, self.out_dim = num_node_types, hidden, out_dim
        self.forward_gru = nn.GRUCell(num_node_types, hidden)
        self.backward_gru = nn.GRUCell(num_node_types, hidden)
        # gate and message maps of each direction, fused: (hidden) -> (2 * hidden)
        self.forward_gate = nn.Linear(hidden, 2 * hidden)
        self.backward_gate = nn.Linear(hidden, 2 * hidden)
        self.sum_messages = SumMessages()
        self.readout = nn.Linear(2 * hidden, out_dim)
        # Without normalisation an untrained encoder's outputs differ across cells by ~1e-3,
        # so the kernel sees all cells as one point and meta-training spends hundreds of steps
        # just growing the scale; layer norm makes encodings O(1) from the start.
        self.norm = nn.LayerNorm(out_dim)
        if generator is not None:
            reset_parameters_(self, generator)

    def forward(self, batch: Batch) -> torch.Tensor:
        """``batch.x`` (n_nodes,) node types, ``batch.edge_index`` (2, n_arcs) -> (n_graphs, out_dim).

        Each graph's node indices must be a topological order (arcs go from lower to higher).
        """
        position = torch.arange(batch.num_nodes) - batch.ptr[batch.batch]  # index within its graph
        num_steps = int(position.max()) + 1 if batch.num_nodes else 0
        first, last = batch.ptr[:-1], batch.ptr[1:] - 1
        fwd_ids, fwd = self._pass(batch.x, batch.edge_index, position, range(num_steps),
                                  self.forward_gru, self.forward_gate)
        bwd_ids, bwd = self._pass(batch.x, batch.edge_index.flip(0), position, range(num_steps - 1, -1, -1),
                                  self.backward_gru, self.backward_gate)
        return self.norm(self.readout(torch.cat([fwd[fwd_ids[last]], bwd[bwd_ids[first]]], dim=1)))

    def _pass(self, types, arcs, position, steps, gru: nn.GRUCell, gate: nn.Linear):
        """One directional pass over arcs pointing from visited to later nodes.

        Returns ``(state_id, states)``: ``state_id`` (n_nodes,) indexes ``states``
        (n_distinct, hidden), the states of the distinct sub-DAGs met.
        """
        state_id = torch.full_like(types, -1)
        states: list[torch.Tensor] = []
        messages: list[torch.Tensor] = []  # one row per distinct state, in state-id order
        num_states = 0
        arc_position = position[arcs[1]]
        for t in steps:
            nodes = (position == t).nonzero().squeeze(1)
            into = arcs[:, arc_position == t]
            merge = _merge_equal_nodes if nodes.numel() >= MERGE_MIN_NODES else _keep_nodes
            distinct, rep, src, dst = merge(types, nodes, into, state_id)
            state_id[nodes] = num_states + distinct
            onehot = nn.functional.one_hot(types[rep], self.num_node_types).to(self.readout.weight.dtype)
            incoming = onehot.new_zeros(rep.numel(), self.hidden)
            if src.numel():
                incoming = self.sum_messages(torch.cat(messages), torch.stack([src, dst]), rep.numel())
            h = gru(onehot, incoming)
            g, m = gate(h).chunk(2, dim=1)
            states.append(h)
            messages.append(torch.sigmoid(g) * m)
            num_states += rep.numel()
        return state_id, torch.cat(states)

    @torch.no_grad()
    def encode_cells(self, cells: Sequence[Sequence[int]], batch_size: int = 16384) -> torch.Tensor:
        """Encodings of NB201 cells (op-index tuples), shape (len(cells), out_dim), no gradient."""
        chunks = [self(cells_to_batch(cells[i : i + batch_size])) for i in range(0, len(cells), batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, self.out_dim, dtype=self.readout.weight.dtype)


MERGE_MIN_NODES = 512  # below this, finding equal nodes costs more than it saves


def _keep_nodes(types, nodes, into, state_id):
    """:func:`_merge_equal_nodes` without merging: every node is its own group."""
    local = torch.full((types.numel(),), -1, dtype=torch.long)
    local[nodes] = torch.arange(nodes.numel())
    return torch.arange(nodes.numel()), nodes, state_id[into[0]], local[into[1]]


def _merge_equal_nodes(types, nodes, into, state_id):
    """Group this step's nodes by (type, sorted predecessor state ids).

    Args:
        types: (n_nodes,) node types of the batch.
        nodes: (k,) batch ids of this step's nodes.
        into: (2, a) arcs into these nodes, sources already visited.
        state_id: (n_nodes,) state ids of visited nodes.

    Returns:
        ``distinct`` (k,) group of each node, ``rep`` (g,) a representative batch node per group,
        and the arcs into representatives as (``src`` state ids, ``dst`` group ids).
    """
    local = torch.full((types.numel(),), -1, dtype=torch.long)
    local[nodes] = torch.arange(nodes.numel())
    dst_local, src_state = local[into[1]], state_id[into[0]]
    # Sort arcs by (target, source state) so that each target's sources form a sorted run.
    order = torch.argsort(dst_local * (int(state_id.max()) + 2) + src_state)
    dst_local, src_state = dst_local[order], src_state[order]
    indegree = torch.bincount(dst_local, minlength=nodes.numel())
    run_start = torch.cumsum(indegree, 0) - indegree
    slot = torch.arange(dst_local.numel()) - run_start[dst_local]
    key = torch.full((nodes.numel(), 1 + (int(indegree.max()) if indegree.numel() else 0)), -1, dtype=torch.long)
    key[:, 0] = types[nodes]
    key[dst_local, 1 + slot] = src_state
    distinct, num_groups = _row_groups(key)
    first = torch.full((num_groups,), nodes.numel(), dtype=torch.long).scatter_reduce(
        0, distinct, torch.arange(nodes.numel()), reduce="amin")
    is_rep = torch.zeros(nodes.numel(), dtype=torch.bool)
    is_rep[first] = True
    keep = is_rep[dst_local]
    return distinct, nodes[first], src_state[keep], distinct[dst_local[keep]]


def _row_groups(key: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Group ids (0..g-1) of the distinct rows of an integer matrix (k, c), and g.

    Folds one column at a time into a running code kept below k, using 1-d ``unique`` (far
    faster than ``unique(dim=0)``) without risk of integer overflow.
    """
    code = torch.zeros(key.size(0), dtype=torch.long)
    for column in key.t():
        shifted = column - column.min() if column.numel() else column
        code = torch.unique(code * (int(shifted.max()) + 1 if shifted.numel() else 1) + shifted, return_inverse=True)[1]
    return code, int(code.max()) + 1 if code.numel() else 0


def cells_to_batch(cells: Sequence[Sequence[int]]) -> Batch:
    """The torch-geometric batch of NB201 DAGs, built in one go (same result as ``dag.batch_dags``).

    Every NB201 cell shares the arcs ``dag.DAG_EDGE_INDEX``, so the batch is the node-type
    matrix flattened plus the shared arcs offset per graph; building 15,625 ``Data`` objects
    one by one takes longer than encoding them.
    """
    types = dag.node_type_matrix(cells)  # (n, 8)
    n, size = types.shape
    arcs = dag.DAG_EDGE_INDEX
    edge_index = arcs.repeat(1, n) + (torch.arange(n) * size).repeat_interleave(arcs.size(1))
    batch_vector = torch.arange(n).repeat_interleave(size)
    return Batch(x=types.reshape(-1), edge_index=edge_index, batch=batch_vector, ptr=torch.arange(n + 1) * size)
