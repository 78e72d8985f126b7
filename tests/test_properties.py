"""Property-based tests of the pure functions whose invariants results rest on: cell encodings,
neighbourhoods, liveness, the canonical key, path encodings, DARTS genotypes, the GP's output
transforms, the comparison's statistics and the checks of user-given values.

Every test is derandomized (the same examples on every run) and kept small, so the file runs in
seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from naslib_bayes.comparison.summary import (
    CHECKPOINTS,
    OPTIMUM_TOLERANCE,
    bootstrap_mean,
    censored_median,
    checkpoints,
    queries_to_optimum,
)
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import (
    MAX_SEED,
    above,
    at_least,
    exponent_text_float,
    merge_hyperparameters,
    require_choice,
    seed_number,
    whole_number,
)
from naslib_bayes.predictors.meta_train import copula, robust_standardise
from naslib_bayes.predictors.target_fit import standardise
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.darts.ops import NONZERO_PRIMITIVES
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201 import encodings
from naslib_bayes.search_spaces.nasbench201.loaders import _csv_number

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150)

cells = st.tuples(*[st.integers(0, nb201.NUM_OPS - 1)] * nb201.NUM_EDGES)
masks = st.tuples(*[st.booleans()] * nb201.NUM_EDGES)

# Every input-to-output path of the cell DAG as edge indices, written out by hand.
E = {edge: e for e, edge in enumerate(nb201.EDGES)}
PATHS = [(E[0, 3],), (E[0, 1], E[1, 3]), (E[0, 2], E[2, 3]), (E[0, 1], E[1, 2], E[2, 3])]


# ---- NAS-Bench-201 cells -------------------------------------------------------------------
@SETTINGS
@given(cells)
def test_string_and_naslib_encodings_round_trip(cell):
    text = nb201.to_string(cell)
    assert nb201.from_string(text) == cell == nb201.parse(text) == nb201.parse(list(cell))
    assert nb201.to_string(nb201.from_string(text)) == text
    assert nb201.from_naslib(nb201.to_naslib(cell)) == cell
    assert nb201.to_naslib(nb201.from_naslib(cell)) == cell


@SETTINGS
@given(cells)
def test_naslib_encoding_puts_each_edges_op_name_at_naslibs_position_of_that_edge(cell):
    naslib = nb201.to_naslib(cell)
    for position, edge in enumerate(nb201.NASLIB_EDGES):
        assert nb201.NASLIB_OPS[naslib[position]] == nb201.OPS[cell[nb201.EDGES.index(edge)]]


@SETTINGS
@given(cells)
def test_the_string_names_each_edge_by_its_source_under_its_target(cell):
    groups = nb201.to_string(cell).split("+")
    for e, (src, dst) in enumerate(nb201.EDGES):
        assert f"|{nb201.OPS[cell[e]]}~{src}|" in groups[dst - 1]


@SETTINGS
@given(cells, st.integers(0, 2**32))
def test_neighbours_are_the_24_one_edge_changes_and_mutate_picks_one(cell, seed):
    around = nb201.neighbours(cell)
    assert len(around) == len(set(around)) == nb201.NUM_EDGES * (nb201.NUM_OPS - 1)
    for other in around:
        assert sum(a != b for a, b in zip(cell, other)) == 1
        assert cell in nb201.neighbours(other)
    mutated = nb201.mutate(cell, random.Random(seed))
    assert mutated in around and mutated != cell


@SETTINGS
@given(masks)
def test_an_edge_is_live_exactly_when_it_lies_on_a_present_input_to_output_path(present):
    full = [p for p in PATHS if all(present[e] for e in p)]
    expected = tuple(any(e in p for p in full) for e in range(nb201.NUM_EDGES))
    assert nb201.live_edge_mask(present) == expected


@SETTINGS
@given(cells)
def test_connectivity_path_encoding_and_canonical_key_agree_on_an_input_path(cell):
    connected = nb201.is_connected(cell)
    assert connected == bool(encodings.path_encoding(cell).any())
    assert connected == (nb201.canonical_key(cell) != "0")


def _without_dead_edges(cell):
    return tuple(op if alive else nb201.NONE for op, alive in zip(cell, nb201.live_edges(cell)))


@SETTINGS
@given(cells)
def test_dead_edges_change_neither_the_canonical_key_nor_the_path_encoding(cell):
    pruned = _without_dead_edges(cell)
    assert nb201.live_edges(pruned) == nb201.live_edges(cell)
    assert nb201.canonical_key(pruned) == nb201.canonical_key(cell)
    assert np.array_equal(encodings.path_encoding(pruned), encodings.path_encoding(cell))
    assert nb201.is_parameter_free(pruned) == nb201.is_parameter_free(cell)


@SETTINGS
@given(cells)
def test_swapping_the_two_intermediate_nodes_keeps_the_canonical_key_when_unlinked(cell):
    cell = list(cell)
    cell[E[1, 2]] = nb201.NONE  # with no 1->2 edge, nodes 1 and 2 are interchangeable
    swapped = list(cell)
    for a, b in (((0, 1), (0, 2)), ((1, 3), (2, 3))):
        swapped[E[a]], swapped[E[b]] = cell[E[b]], cell[E[a]]
    assert nb201.canonical_key(swapped) == nb201.canonical_key(cell)


@SETTINGS
@given(cells)
def test_a_path_feature_is_set_exactly_when_a_path_of_those_ops_is_present(cell):
    features = encodings.path_encoding(cell)
    expected = np.zeros(encodings.PATH_ENCODING_DIM, dtype=np.float32)
    for path in PATHS:
        ops = [cell[e] for e in path]
        if nb201.NONE not in ops:
            expected[encodings.path_feature_index(ops)] = 1
    assert np.array_equal(features, expected)
    assert features.dtype == np.float32 and features.shape == (84,)


@SETTINGS
@given(st.lists(cells, max_size=6))
def test_path_encodings_of_many_cells_stack_those_of_each(many):
    table = encodings.path_encodings(many)
    assert table.shape == (len(many), encodings.PATH_ENCODING_DIM)
    for row, cell in zip(table, many):
        assert np.array_equal(row, encodings.path_encoding(cell))


def test_path_feature_indices_are_a_bijection_onto_the_84_features():
    indices = [encodings.path_feature_index(ops)
               for length in range(1, 4) for ops in itertools.product(encodings.PATH_OPS, repeat=length)]
    assert sorted(indices) == list(range(encodings.PATH_ENCODING_DIM))


# ---- DARTS genotypes -----------------------------------------------------------------------
@st.composite
def darts_cells(draw):
    steps = draw(st.integers(1, 5))
    edges = tuple((draw(st.sampled_from(NONZERO_PRIMITIVES)), draw(st.integers(0, node - 1)))
                  for node in range(2, steps + 2) for _ in range(2))
    concat = tuple(draw(st.lists(st.integers(2, steps + 1), min_size=1, max_size=steps, unique=True)))
    return edges, concat


@SETTINGS
@given(darts_cells(), darts_cells())
def test_a_genotype_survives_its_json_form(normal, reduce):
    genotype = Genotype(*normal, *reduce)
    text = json.dumps(genotype.to_json())
    assert Genotype.from_json(json.loads(text)) == genotype
    assert Genotype.from_json(genotype.to_json()).to_json() == genotype.to_json()


@SETTINGS
@given(darts_cells(), st.data())
def test_a_genotype_input_from_a_later_node_is_refused(normal, data):
    edges, concat = normal
    position = data.draw(st.integers(0, len(edges) - 1))
    node = position // 2 + 2
    bad = list(map(list, edges))
    bad[position][1] = data.draw(st.integers(node, node + 5))
    with pytest.raises(UserError, match=f"node {node} takes input"):
        Genotype.from_json({"normal": bad, "reduce": [list(e) for e in edges]})


# ---- GP output transforms ------------------------------------------------------------------
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
# accuracies as a benchmark stores them: a few decimals, so differences are not lost to rounding
accuracies = st.integers(0, 10_000).map(lambda k: k / 100)


@SETTINGS
@given(st.lists(finite, min_size=1, max_size=30), st.lists(finite, min_size=1, max_size=10))
def test_copula_is_monotone_gives_ties_one_value_and_stays_inside_the_normal(reference, values):
    reference, values = np.array(reference), np.array(sorted(values))
    out = copula(values, reference)
    assert np.all(np.isfinite(out)) and np.all(np.diff(out) >= 0)
    for a, b in zip(values, out):
        assert b == copula(np.array([a]), reference)[0]  # a value's image is its own
    distinct = np.unique(reference)
    assert np.all(np.diff(copula(distinct, reference)) > 0)
    own = copula(distinct, distinct)  # untied ranks 1..n sit symmetrically about the median
    assert np.allclose(own, -own[::-1], atol=1e-12)


@SETTINGS
@given(st.lists(accuracies, min_size=1, max_size=30), st.lists(accuracies, min_size=2, max_size=10))
def test_robust_standardise_is_monotone_and_affine_above_its_clip(reference, values):
    reference, values = np.array(reference), np.array(sorted(values))
    out = robust_standardise(values, reference, clip=-2.0)
    assert np.all(np.diff(out) >= -1e-12) and np.all(out >= -2.0)
    free = out > -2.0
    if free.sum() >= 2:
        # one scale and one shift for every unclipped value
        x, y = values[free], out[free]
        slope = (y[-1] - y[0]) / (x[-1] - x[0]) if x[-1] != x[0] else None
        if slope is not None:
            assert slope > 0
            assert np.allclose(y, y[0] + slope * (x - x[0]), atol=1e-9 * max(1.0, np.abs(y).max()))


@SETTINGS
@given(st.lists(accuracies, min_size=2, max_size=30), st.floats(0.1, 10), st.floats(-50, 50))
def test_standardise_gives_zero_mean_unit_spread_whatever_the_units(values, scale, shift):
    v = torch.tensor(values, dtype=torch.float64)
    out = standardise(v)
    assert abs(float(out.mean())) < 1e-9
    if len(set(values)) > 1:
        assert abs(float(out.std(unbiased=False)) - 1) < 1e-9
        assert torch.allclose(standardise(scale * v + shift), out, atol=1e-6)
    else:  # tied: only centred
        assert torch.equal(out, torch.zeros_like(v))


# ---- comparison statistics -----------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 500))
def test_checkpoints_are_the_reported_counts_up_to_the_budget_and_the_budget(budget):
    points = checkpoints(budget)
    assert points == sorted(set(points)) and points[-1] == budget
    assert set(points[:-1]) <= set(CHECKPOINTS) and all(t <= budget for t in points)
    assert [t for t in CHECKPOINTS if t <= budget] == [t for t in points if t in CHECKPOINTS]


@SETTINGS
@given(st.lists(st.one_of(st.floats(0, 5), st.just(0.0), st.just(math.nan)), min_size=1, max_size=40))
def test_queries_to_optimum_is_the_first_query_with_zero_regret(curve):
    curve = np.array(curve)
    q = queries_to_optimum(curve)
    assert 1 <= q <= len(curve) + 1
    assert not np.any(curve[: q - 1] <= OPTIMUM_TOLERANCE)
    assert q == len(curve) + 1 or curve[q - 1] <= OPTIMUM_TOLERANCE


@SETTINGS
@given(st.lists(st.integers(1, 60), min_size=1, max_size=15), st.integers(1, 59))
def test_censored_median_is_the_median_with_censored_values_at_budget_plus_one(values, budget):
    values = [min(v, budget + 1) for v in values]  # queries_to_optimum never exceeds budget + 1
    median, censored = censored_median(values, budget)
    assert median == statistics.median(values)
    ordered = sorted(values)
    assert censored == (ordered[len(ordered) // 2] > budget)
    if not censored:
        assert median <= budget


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 4), st.integers(0, 2**32))
def test_bootstrap_intervals_hold_the_mean_within_the_data(seeds, steps, seed):
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 10, size=(seeds, steps))
    mean, low, high = bootstrap_mean(values, np.random.default_rng(0), samples=200)
    assert np.allclose(mean, values.mean(0))
    assert np.all(low <= high)
    assert np.all(low >= values.min(0) - 1e-12) and np.all(high <= values.max(0) + 1e-12)
    same, lo, hi = bootstrap_mean(np.repeat(values[:1], seeds, axis=0), np.random.default_rng(0), samples=50)
    assert np.allclose(lo, same) and np.allclose(hi, same)


# ---- checks of user-given values -----------------------------------------------------------
@SETTINGS
@given(st.integers(-(2**70), 2**70))
def test_whole_number_keeps_every_integer_of_any_kind(n):
    assert whole_number("x", n) == n and type(whole_number("x", n)) is int
    if abs(n) < 2**53:
        assert whole_number("x", float(n)) == n
    if abs(n) < 2**62:
        assert whole_number("x", np.int64(n)) == n


@SETTINGS
@given(st.one_of(st.floats().filter(lambda f: not (math.isfinite(f) and f.is_integer())),
                 st.booleans(), st.text(max_size=3), st.none()))
def test_whole_number_refuses_fractions_bools_text_and_non_finite_numbers_by_name(value):
    with pytest.raises(UserError, match="steps must be a whole number"):
        whole_number("steps", value)


@SETTINGS
@given(st.integers(-(2**40), 2**40))
def test_seed_number_takes_exactly_the_seeds_torch_and_numpy_accept(n):
    if 0 <= n <= MAX_SEED:
        assert seed_number(n) == n
    else:
        with pytest.raises(UserError, match=str(n)):
            seed_number(n)


@SETTINGS
@given(st.floats(allow_nan=True), st.floats(-10, 10))
def test_lower_bounds_admit_exactly_the_values_on_their_side(value, bound):
    assert at_least(bound).admits(value) == (value >= bound)
    assert above(bound).admits(value) == (value > bound)
    if math.isnan(value):
        assert not at_least(bound).admits(value)


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_exponent_text_is_read_as_the_float_it_spells(x):
    for text in (f"{x:e}", f"{x:.3E}", f" {x:e} "):
        assert exponent_text_float(text) == float(text)
    assert exponent_text_float(repr(x)) == (x if "e" in repr(x) else None)


@SETTINGS
@given(st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False), st.booleans(), st.text(max_size=4)))
def test_merged_values_take_their_defaults_type_or_are_refused_by_name(value):
    for default in (3, 0.5, True, "ei"):
        try:
            merged = merge_hyperparameters("opt", {"k": default}, {"k": value})["k"]
        except UserError as exc:
            assert "opt: hyper-parameter k" in str(exc)
            continue
        assert type(merged) is type(default)
        if isinstance(default, int) and not isinstance(default, bool):
            assert merged == value and not isinstance(value, bool)


@SETTINGS
@given(st.text(max_size=8), st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4))
def test_require_choice_accepts_exactly_the_choices(value, choices):
    if value in choices:
        require_choice("mode", value, tuple(choices))
    else:
        with pytest.raises(UserError, match="mode"):
            require_choice("mode", value, tuple(choices))


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_csv_numbers_read_back_as_the_floats_written(x):
    assert _csv_number("line 2", "acc", repr(x)) == x
    assert _csv_number("line 2", "acc", f" {x!r}\t") == x


@SETTINGS
@given(st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "1e400", "x", "1,5", "--1"]))
def test_csv_fields_that_are_not_finite_numbers_are_refused_naming_line_and_column(text):
    with pytest.raises(UserError, match=r"line 2, column acc: .* not a"):
        _csv_number("line 2", "acc", text)
    assert math.isnan(_csv_number("line 2", "acc", "  "))


bad_ops = st.sampled_from([0.7, 2.5, True, False, np.bool_(True), -1, 5, np.int64(7), 4.000001])


@SETTINGS
@given(cells, st.integers(0, nb201.NUM_EDGES - 1), bad_ops)
def test_path_encodings_refuse_the_cells_path_encoding_refuses(cell, edge, op):
    bad = cell[:edge] + (op,) + cell[edge + 1:]
    with pytest.raises(UserError, match="invalid NAS-Bench-201 cell"):
        encodings.path_encoding(bad)
    with pytest.raises(UserError, match="invalid NAS-Bench-201 cell"):
        encodings.path_encodings([cell, bad])  # never truncated (0.7 -> none) nor a KeyError


@SETTINGS
@given(cells, st.sampled_from([str, lambda op: f"{op}.0", lambda op: str(op).encode(), np.str_]))
def test_op_indices_given_as_text_are_refused_not_read_digit_by_digit(cell, spell):
    # validate promises integers and integral floats; "012340" is a string, not six op indices
    for text in ("".join(map(str, cell)), [spell(op) for op in cell]):
        for convert in (nb201.validate, nb201.from_naslib, nb201.to_string):
            with pytest.raises(UserError, match="invalid NAS-Bench-201 cell"):
                convert(text)
