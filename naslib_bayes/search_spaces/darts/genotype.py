"""DARTS genotypes: the discrete description of a normal and a reduction cell.

A genotype lists, for each of the 4 intermediate nodes of a cell, two ``(op, input)`` pairs;
inputs 0 and 1 are the outputs of the two previous cells, input ``i >= 2`` the intermediate
node ``i``. The cell's output concatenates the nodes in ``*_concat``. JSON form::

    {"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import whole_number
from naslib_bayes.search_spaces.darts.ops import NONZERO_PRIMITIVES, PARAMETER_FREE

#: The keys of a genotype's JSON form (the concats may be left out: every intermediate node).
GENOTYPE_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")


@dataclass(frozen=True)
class Genotype:
    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def to_json(self) -> dict[str, Any]:
        return {
            "normal": [[op, int(i)] for op, i in self.normal],
            "normal_concat": [int(i) for i in self.normal_concat],
            "reduce": [[op, int(i)] for op, i in self.reduce],
            "reduce_concat": [int(i) for i in self.reduce_concat],
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "genotype") -> "Genotype":
        """Parse and validate a genotype object; :class:`UserError` names what is wrong."""
        if not isinstance(data, dict) or not {"normal", "reduce"} <= set(data):
            raise UserError(f"{source}: a DARTS genotype needs 'normal' and 'reduce' lists")
        unknown = sorted(set(data) - set(GENOTYPE_KEYS), key=str)
        if unknown:  # a misspelt 'normal_concta' would leave the default concat in its place
            raise UserError(f"{source}: unknown genotype key {unknown[0]!r}; a genotype has {', '.join(GENOTYPE_KEYS)}")
        cells = []
        for name in ("normal", "reduce"):
            edges = _edges(data[name], f"{source}: {name}")
            key = f"{name}_concat"
            concat = _nodes(data[key], f"{source}: {key}") if key in data else tuple(_every_node(edges))
            cells += [edges, concat]
        genotype = cls(*cells)
        genotype.validate(source)
        return genotype

    def validate(self, source: str = "genotype") -> None:
        for name, edges, concat in (("normal", self.normal, self.normal_concat), ("reduce", self.reduce, self.reduce_concat)):
            if not edges or len(edges) % 2:
                raise UserError(f"{source}: {name} needs two (op, input) pairs per node")
            for position, (op, src) in enumerate(edges):
                node = position // 2 + 2
                if op not in NONZERO_PRIMITIVES:
                    raise UserError(f"{source}: {name} uses unknown or 'none' op {op!r}")
                if not 0 <= src < node:
                    raise UserError(f"{source}: {name} node {node} takes input {src}, not an earlier node")
            last = len(edges) // 2 + 1
            if not concat:
                raise UserError(f"{source}: {name}_concat is empty; list the intermediate nodes (2 .. {last}) "
                                "the cell outputs")
            if any(not 2 <= i <= last for i in concat):
                raise UserError(f"{source}: {name}_concat lists a node that does not exist")

    def parameter_free(self) -> bool:
        """True when no cell contains a convolution."""
        return all(op in PARAMETER_FREE for op, _ in (*self.normal, *self.reduce))

    def op_counts(self) -> dict[str, int]:
        counts = {op: 0 for op in NONZERO_PRIMITIVES}
        for op, _ in (*self.normal, *self.reduce):
            counts[op] += 1
        return counts


def _edges(value: Any, where: str) -> tuple[tuple[str, int], ...]:
    """``[[op, input], ...]`` as (op, input) pairs; an input must be a whole number (int() made 0.7 input 0)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(e, (list, tuple)) and len(e) == 2 for e in value):
        raise UserError(f"{where}: genotype edges must be [op, input] pairs")
    return tuple((str(op), whole_number(f"{where}[{k}] input", src)) for k, (op, src) in enumerate(value))


def _nodes(value: Any, where: str) -> tuple[int, ...]:
    """A list of node indices, each a whole number."""
    if not isinstance(value, (list, tuple)):  # a string or a dict would be read item by item
        raise UserError(f"{where} must be a list of node indices, got {value!r}")
    return tuple(whole_number(f"{where}[{k}]", node) for k, node in enumerate(value))


def _every_node(edges: Sequence[tuple[str, int]]) -> list[int]:
    """The default concat of a cell: each of its intermediate nodes (two edges per node)."""
    return list(range(2, len(edges) // 2 + 2))


def from_cells(normal: Sequence[tuple[str, int]], normal_concat: Sequence[int],
               reduce: Sequence[tuple[str, int]], reduce_concat: Sequence[int]) -> Genotype:
    genotype = Genotype(tuple(map(tuple, normal)), tuple(normal_concat), tuple(map(tuple, reduce)), tuple(reduce_concat))
    genotype.validate()
    return genotype


def load(path: str | Path) -> Genotype:
    """A genotype from a JSON file (a bare genotype or a result.json holding one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read a genotype ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("final_architecture"), dict):
        data = data["final_architecture"]
    return Genotype.from_json(data, source=str(path))
