"""NB201 cell: conversions, enumeration, neighbourhoods, liveness and the canonical key."""

from __future__ import annotations

import csv
import random
import re

import numpy as np
import pytest

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

ALL = list(nb201.all_cells())


def test_enumeration_covers_the_space_once():
    assert len(ALL) == 15625 == len(set(ALL)) == nb201.NUM_CELLS


def test_string_round_trip_over_all_cells():
    strings = [nb201.to_string(c) for c in ALL]
    assert len(set(strings)) == len(ALL)
    assert all(nb201.from_string(s) == c for s, c in zip(strings, ALL))


def test_naslib_round_trip_over_all_cells():
    encoded = [nb201.to_naslib(c) for c in ALL]
    assert len(set(encoded)) == len(ALL)
    assert all(nb201.from_naslib(e) == c for e, c in zip(encoded, ALL))


def test_known_naslib_example():
    # NASLib's op indices (4,3,3,0,0,0): avg_pool on 0->1, conv1x1 on 0->2 and 0->3, skips elsewhere.
    cell = nb201.from_naslib((4, 3, 3, 0, 0, 0))
    assert nb201.to_string(cell) == (
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    )


def test_string_matches_every_row_of_the_csv(nats_csv):
    with open(nats_csv, newline="") as handle:
        strings = [row["ArchitectureString"] for row in csv.DictReader(handle)]
    assert {nb201.from_string(s) for s in strings} == set(ALL)
    assert all(nb201.to_string(nb201.from_string(s)) == s for s in strings)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|nor_conv_3x3~0|",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|none~0|none~0|+|none~0|none~1|none~2|",
        "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~\u00b2|+|none~0|none~1|+|none~0|none~1|none~2|",  # a superscript two: a digit, not an index
    ],
)
def test_malformed_strings_name_the_string(bad):
    with pytest.raises(UserError, match=re.escape(repr(bad))):
        nb201.from_string(bad)


@pytest.mark.parametrize("bad", [(0, 1, 2), (0, 1, 2, 3, 4, 5), (0, 0, 0, 0, 0, -1), None, (0, 0, 0, 0, 0, "x"),
                                 (0, 0, 0, 0, 0, 0.7), (1, 2, 3, 4, 0, 1.5), (0, 0, 0, 0, 0, True),
                                 tuple(np.array([0.7, 1, 2, 3, 4, 0])), (0, 0, 0, 0, 0, np.bool_(True))])
def test_invalid_tuples_are_rejected(bad):
    with pytest.raises(UserError, match="invalid NAS-Bench-201 cell"):
        nb201.validate(bad)


def test_integral_op_indices_of_any_integer_type_are_accepted():
    expected = (0, 1, 2, 3, 4, 0)
    assert nb201.validate(np.array(expected, dtype=np.int64)) == expected
    assert nb201.validate(tuple(np.array(expected, dtype=np.uint8))) == expected
    assert nb201.validate(np.array(expected, dtype=np.float64)) == expected  # integral floats: no value is lost
    assert all(type(op) is int for op in nb201.validate(np.array(expected, dtype=np.float32)))


def test_neighbours_differ_on_exactly_one_edge():
    rng = random.Random(0)
    for _ in range(200):
        cell = nb201.random_cell(rng)
        nbrs = nb201.neighbours(cell)
        assert len(nbrs) == len(set(nbrs)) == 24
        assert all(sum(a != b for a, b in zip(cell, n)) == 1 for n in nbrs)
        assert nb201.mutate(cell, rng) in nbrs


def test_live_edges_follow_node_reachability():
    # 1<-0 conv, 2<-0 none, 2<-1 none, 3<-0 none, 3<-1 none, 3<-2 conv: node 2 is dead,
    # so the edge 1<-0 feeds nothing and 3<-2 carries nothing: no edge is live.
    dead = (3, 0, 0, 0, 0, 3)
    assert nb201.live_edges(dead) == (False,) * 6
    assert not nb201.is_connected(dead)
    # 3<-0 conv only: the single direct path is live, the dangling 1<-0 is not.
    direct = (3, 0, 0, 3, 0, 0)
    assert nb201.live_edges(direct) == (False, False, False, True, False, False)
    assert nb201.live_edges((1,) * 6) == (True,) * 6


def test_parameter_free_ignores_dead_convolutions():
    assert nb201.is_parameter_free((3, 0, 0, 1, 0, 0))  # conv on 1<-0 never reaches the output
    assert not nb201.is_parameter_free((3, 0, 0, 1, 1, 0))
    assert nb201.op_counts((3, 3, 0, 1, 4, 2)) == {
        "none": 1, "skip_connect": 1, "nor_conv_1x1": 1, "nor_conv_3x3": 2, "avg_pool_3x3": 1,
    }


# ---- canonical key against the benchmark's UniqueString ----------------------------------
# The CSV's UniqueString is the benchmark's own form of a cell's computation. It differs from
# ``canonical_key`` in three ways, each an identity that the benchmark's string does not apply:
#   1. it keeps a "#" term for every zero contribution (a ``none`` edge, or any edge from a
#      node that is identically zero), although adding zero changes nothing;
#   2. it keeps ``(#+#)@op`` — an op applied to an all-zero node — instead of zero;
#   3. it sorts a node's terms as strings after a skip connection has already joined a sum
#      into one string, so the same multiset of terms can be written in different orders.
# ``normalise_unique_string`` below applies exactly those three identities to the benchmark's
# string. The test asserts that the normalised strings and ``canonical_key`` induce the same
# partition of the 15,625 cells: every difference is explained by the three identities.


def _parse_sum(text: str, pos: int = 0) -> tuple[list, int]:
    terms = []
    while True:
        if text.startswith("(", pos):
            inner, pos = _parse_sum(text, pos + 1)
            assert text[pos] == ")" and text[pos + 1] == "@"
            match = re.compile(r"[a-z0-9_]+").match(text, pos + 2)
            terms.append(("op", match.group(), inner))
            pos = match.end()
        else:
            terms.append(("leaf", text[pos]))  # "0" (the input) or "#" (zero)
            pos += 1
        if pos < len(text) and text[pos] == "+":
            pos += 1
            continue
        return terms, pos


def _normalise(terms: list) -> tuple:
    out = []
    for term in terms:
        if term == ("leaf", "#"):
            continue  # identity 1: zero terms vanish
        if term[0] == "op":
            inner = _normalise(term[2])
            if not inner:
                continue  # identity 2: an op on an all-zero node is zero
            out.append((term[1], inner))
        else:
            out.append(("x",))
    return tuple(sorted(out))  # identity 3: a sum is a multiset


def normalise_unique_string(text: str) -> tuple:
    terms, end = _parse_sum(text)
    assert end == len(text)
    return _normalise(terms)


def test_canonical_key_partition_matches_unique_string_up_to_three_identities(nats_csv):
    with open(nats_csv, newline="") as handle:
        rows = [(nb201.from_string(r["ArchitectureString"]), r["UniqueString"]) for r in csv.DictReader(handle)]
    ours = nb201.group_by_canonical_key(cell for cell, _ in rows)
    theirs: dict[str, set] = {}
    normalised: dict[tuple, set] = {}
    for cell, unique in rows:
        theirs.setdefault(unique, set()).add(cell)
        normalised.setdefault(normalise_unique_string(unique), set()).add(cell)
    assert len(theirs) == 6466
    key_of = {c: k for k, cells in ours.items() for c in cells}
    # Our key never separates cells the benchmark calls equal: it is a coarsening ...
    assert all(len({key_of[c] for c in cells}) == 1 for cells in theirs.values())
    # ... with 4,930 classes, exactly the classes of the benchmark's string after the three identities.
    assert len(ours) == 4930
    assert sorted(map(sorted, ours.values())) == sorted(map(sorted, normalised.values()))


def test_canonical_key_merges_known_equivalences():
    conv = nb201.CONV3X3
    # skip then conv on a direct path equals conv directly (the dangling edges do not matter).
    a = (nb201.SKIP, 0, 0, 0, 0, 0)  # only 1<-0 skip, output unreachable
    assert nb201.canonical_key(a) == "0"
    b = (conv, 0, nb201.SKIP, 0, 0, nb201.SKIP)  # x -conv-> 1 -skip-> 2 -skip-> 3
    c = (0, 0, 0, 0, conv, 0)  # invalid path: node 1 is zero
    d = (0, conv, 0, 0, 0, nb201.SKIP)  # x -conv-> 2 -skip-> 3
    assert nb201.canonical_key(b) == nb201.canonical_key(d) == "nor_conv_3x3(x)"
    assert nb201.canonical_key(c) == "0"
    # conv-then-skip and skip-then-conv on the path through node 1 compute the same function.
    e = (conv, 0, 0, nb201.AVG_POOL, nb201.SKIP, 0)
    f = (nb201.SKIP, 0, 0, nb201.AVG_POOL, conv, 0)
    assert nb201.canonical_key(e) == nb201.canonical_key(f) == "avg_pool_3x3(x)+nor_conv_3x3(x)"
    # ... but two stacked convolutions are not one.
    g = (conv, 0, 0, 0, conv, 0)
    assert nb201.canonical_key(g) == "nor_conv_3x3(nor_conv_3x3(x))"
