"""The encoders feeding the TNAS kernel: psi over cell DAGs, phi over class-grouped images."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from naslib_bayes.predictors.encoders import dag_gru
from naslib_bayes.predictors.encoders.dag_gru import DagGRUEncoder, cells_to_batch
from naslib_bayes.predictors.encoders.set_transformer import (
    DatasetEncoder, PixelFeatures, RandomConvFeatures, class_sets, encode_dataset)
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201 import dag

ALL_CELLS = list(nb201.all_cells())



@pytest.fixture(scope="module")
def encoder():
    return DagGRUEncoder(generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def all_encodings(encoder):
    return encoder.encode_cells(ALL_CELLS)


def test_fast_batch_is_the_torch_geometric_batch():
    cells = ALL_CELLS[::997]
    fast, reference = cells_to_batch(cells), dag.batch_dags(cells)
    for key in ("x", "edge_index", "batch", "ptr"):
        assert torch.equal(getattr(fast, key), getattr(reference, key)), key


@pytest.mark.parametrize("index", [0, 123, 7812, 15624])
def test_a_cell_alone_encodes_as_inside_the_full_batch(encoder, all_encodings, index):
    alone = encoder(dag.batch_dags([ALL_CELLS[index]]))[0].detach()
    assert torch.allclose(alone, all_encodings[index], atol=1e-6, rtol=0)


def _min_pairwise_distance(x: torch.Tensor, chunk: int = 2048) -> float:
    smallest = float("inf")
    for start in range(0, x.size(0), chunk):
        d = torch.cdist(x[start : start + chunk], x)
        rows = torch.arange(d.size(0))
        d[rows, start + rows] = float("inf")  # a cell's distance to itself
        smallest = min(smallest, float(d.min()))
    return smallest


def test_untrained_encodings_of_all_cells_are_pairwise_distinct(all_encodings):
    assert all_encodings.shape == (15625, 16)
    assert _min_pairwise_distance(all_encodings.double()) > 1e-7


def test_merging_equal_subgraphs_changes_no_encoding(encoder, monkeypatch):
    cells = ALL_CELLS[::7]  # 2,233 cells: large enough for the merge path
    merged = encoder.encode_cells(cells)
    monkeypatch.setattr(dag_gru, "MERGE_MIN_NODES", 10**9)  # visit every node separately
    separate = encoder.encode_cells(cells)
    assert torch.allclose(merged, separate, atol=1e-6, rtol=0)


def _reference_encoding(encoder: DagGRUEncoder, cell) -> torch.Tensor:
    """psi of one cell, node by node as the D-VAE encoder is defined, from the cell's edge list:
    h_v = GRU(onehot(type_v), sum over predecessors u of sigmoid(W_g h_u + b_g) * (W_m h_u + b_m))
    forwards over the ops-as-nodes DAG (input node 0, the op of cell edge e at node 1 + e, output
    node 7) and with the second GRU backwards over the reversed arcs; the encoding is
    LayerNorm(readout([forward h of the output node, backward h of the input node]))."""
    types = [dag.INPUT_TYPE, *cell, dag.OUTPUT_TYPE]
    preds = {0: []}
    for e, (src, dst) in enumerate(nb201.EDGES):
        preds[1 + e] = [0] if src == 0 else [1 + f for f, (_, d) in enumerate(nb201.EDGES) if d == src]
    preds[7] = [1 + e for e, (_, dst) in enumerate(nb201.EDGES) if dst == nb201.NUM_NODES - 1]
    succs = {v: [w for w in preds if v in preds[w]] for v in preds}

    def visit(gru, gate, order, parents):
        h = {}
        for v in order:
            message = torch.zeros(1, encoder.hidden)
            for u in parents[v]:
                g, m = gate(h[u]).chunk(2, dim=1)
                message = message + torch.sigmoid(g) * m
            h[v] = gru(torch.nn.functional.one_hot(torch.tensor([types[v]]), dag.NUM_NODE_TYPES).float(), message)
        return h

    forward = visit(encoder.forward_gru, encoder.forward_gate, range(8), preds)
    backward = visit(encoder.backward_gru, encoder.backward_gate, range(7, -1, -1), succs)
    return encoder.norm(encoder.readout(torch.cat([forward[7], backward[0]], dim=1)))[0]


@pytest.mark.parametrize("index", [0, 1, 123, 4321, 7812, 15624])
def test_encodings_follow_the_gated_gru_recursion_node_by_node(encoder, all_encodings, index):
    with torch.no_grad():
        expected = _reference_encoding(encoder, ALL_CELLS[index])
    assert torch.allclose(all_encodings[index], expected, atol=1e-5, rtol=0)


def test_gradients_reach_every_encoder_weight(encoder):
    out = encoder(cells_to_batch(ALL_CELLS[:40]))
    out.pow(2).sum().backward()
    missing = [name for name, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    encoder.zero_grad()
    assert not missing


def test_construction_depends_on_the_generator_only():
    torch.manual_seed(1)
    a = DagGRUEncoder(generator=torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    b = DagGRUEncoder(generator=torch.Generator().manual_seed(5))
    c = DagGRUEncoder(generator=torch.Generator().manual_seed(6))
    cells = ALL_CELLS[:50]
    assert torch.equal(a.encode_cells(cells), b.encode_cells(cells))
    assert not torch.allclose(a.encode_cells(cells), c.encode_cells(cells))


def test_encoding_leaves_no_file_in_the_temporary_folder(tmp_path):
    # Every process that encodes must leave the temporary folder as it found it: a run per
    # process on a cluster would otherwise pile up files there that nothing deletes.
    script = (
        "import torch\n"
        "from naslib_bayes.predictors.encoders.dag_gru import DagGRUEncoder\n"
        "DagGRUEncoder(generator=torch.Generator().manual_seed(0)).encode_cells([(0, 1, 2, 3, 4, 0)])\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- phi ------------------------------------------------------------------------------------
def _read_idx(path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    images = torch.from_numpy(_read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz").copy())
    labels = torch.from_numpy(_read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return images, labels


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.images / 16.0, dtype=torch.float32), torch.tensor(data.target)


def _phi(extractor, images, seed=1):
    encoder = DatasetEncoder(extractor.out_dim, generator=torch.Generator().manual_seed(seed)).double()
    return encoder, lambda sets: encode_dataset(encoder, extractor, sets).detach()


@pytest.mark.parametrize("extractor", [PixelFeatures(8), RandomConvFeatures(seed=0)], ids=lambda e: e.name)
@pytest.mark.parametrize("data", ["mnist", "digits"])
def test_phi_ignores_the_order_of_samples_and_classes(request, extractor, data):
    images, labels = request.getfixturevalue(data)
    assert torch.unique(labels).numel() == 10
    sets = class_sets(images, labels, per_class=20, generator=torch.Generator().manual_seed(0))
    assert sets.shape[:2] == (10, 20)
    assert all(torch.all(labels[torch.isin(labels, c)] == c) for c in torch.unique(labels))
    _, phi = _phi(extractor, images)
    reference = phi(sets)
    g = torch.Generator().manual_seed(3)
    within = torch.stack([s[torch.randperm(20, generator=g)] for s in sets])
    assert not torch.equal(within, sets)
    assert torch.allclose(phi(within), reference, atol=1e-6, rtol=0)
    across = within[torch.randperm(10, generator=g)]
    assert torch.allclose(phi(across), reference, atol=1e-6, rtol=0)


def test_phi_tells_mnist_from_digits(mnist, digits):
    extractor = RandomConvFeatures(seed=0)
    _, phi = _phi(extractor, None)
    g = torch.Generator().manual_seed(0)
    a1 = phi(class_sets(*mnist, per_class=20, generator=g))
    a2 = phi(class_sets(*mnist, per_class=20, generator=g))
    b = phi(class_sets(*digits, per_class=20, generator=g))
    # Two samples of MNIST are closer to each other than to digits.
    assert torch.dist(a1, a2) < torch.dist(a1, b)


def test_random_conv_features_are_fixed_by_their_seed(digits):
    images = digits[0][:16]
    assert torch.equal(RandomConvFeatures(seed=4)(images), RandomConvFeatures(seed=4)(images))
    assert not torch.equal(RandomConvFeatures(seed=4)(images), RandomConvFeatures(seed=5)(images))


def _reference_phi(encoder: DatasetEncoder, features: torch.Tensor) -> torch.Tensor:
    """phi as the Set Transformer defines its blocks: MAB(Q, K) = LN(H + rFF(H)) with
    H = LN(Q + Att(Q, K, K)); SAB(X) = MAB(X, X); PMA(X) = MAB(S, rFF(X)) for a learned seed S;
    each set block is PMA(SAB(project(X))); samples pool into classes, classes into phi."""
    def mab(block, query, keys):
        h = block.norm1(query + block.attention(query, keys, keys, need_weights=False)[0])
        return block.norm2(h + block.ff(h))

    def set_block(block, x):
        h = block.project(x)
        h = mab(block.sab, h, h)
        seed = block.pool.query.expand(x.size(0), -1, -1)
        return mab(block.pool.mab, seed, block.pool.pre(h))[:, 0]

    classes = set_block(encoder.intra_class, features)  # (n_classes, dim): one summary per class
    return encoder.head(set_block(encoder.inter_class, classes[None])[0])


def test_phi_is_two_set_blocks_of_attention_pooling():
    encoder = DatasetEncoder(12, dim=16, out_dim=5, generator=torch.Generator().manual_seed(0)).double()
    features = torch.randn(6, 9, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(encoder(features), _reference_phi(encoder, features), atol=1e-12, rtol=0)
    encoder(features).pow(2).sum().backward()
    still = [name for name, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not still  # every weight of phi shapes it


class _MisshapenFeatures(torch.nn.Module):
    """A user extractor claiming ``out_dim`` 6 whose output breaks the (n, out_dim) contract."""

    out_dim = 6
    name = "misshapen:make"

    def __init__(self, form: str):
        super().__init__()
        self.form = form

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = PixelFeatures(3)(images)[:, :6]  # (n, 6)
        return {"narrow": features[:, :4], "transposed": features.t().contiguous(), "flat": features.flatten()}[self.form]


@pytest.mark.parametrize("form", ["narrow", "transposed", "flat"])
def test_phi_refuses_features_not_of_shape_n_by_out_dim_naming_the_extractor(form):
    """A transposed or flattened output reshaped silently into scrambled features; a narrower one
    was torch's matrix-shape traceback from deep inside the Set Transformer."""
    from naslib_bayes.errors import UserError

    extractor = _MisshapenFeatures(form)
    encoder = DatasetEncoder(extractor.out_dim, generator=torch.Generator().manual_seed(0)).double()
    images = torch.rand(3, 5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(UserError) as info:
        encode_dataset(encoder, extractor, images)
    message = str(info.value)
    assert "misshapen:make" in message and "(15, 6)" in message and "\n" not in message


@pytest.fixture
def extractor_modules(tmp_path, monkeypatch):
    """Importable modules of user extractors: one that cannot be imported, one whose factory raises."""
    (tmp_path / "extractor_with_a_typo.py").write_text("def make(:\n")
    (tmp_path / "extractor_factories.py").write_text(
        "import torch\n"
        "NOT_A_FACTORY = 3\n"
        "def broken():\n"
        "    raise RuntimeError('no weights file here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("name, cause", [
    ("extractor_with_a_typo:make", "SyntaxError"),
    (":make", "module"),
    ("extractor_factories:NOT_A_FACTORY", "not callable"),
    ("extractor_factories:broken", "no weights file here"),
])
def test_a_user_extractor_that_cannot_be_built_is_one_line_naming_it(extractor_modules, name, cause):
    """Only a missing module or attribute was one line; a module that fails to import, an empty
    module name, an attribute that is no factory or a factory that raises were tracebacks."""
    from naslib_bayes.errors import UserError
    from naslib_bayes.predictors.dataset_context import build_feature_extractor

    with pytest.raises(UserError) as info:
        build_feature_extractor(name)
    message = str(info.value)
    assert message.startswith(f"feature extractor {name!r}") and cause in message and "\n" not in message
