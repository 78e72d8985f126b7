"""The grid of a black-box comparison: its settings, its runs and the preparations they need.

A transfer method is prepared once per (dataset, seed) by default: the seed drives its
meta-training, so the seeds are independent repetitions of the whole method. With
``prepare_per="dataset"`` one preparation (seed 0) serves every seed of a dataset, the paper's
protocol at 1/N of the cost; a method whose search is deterministic then repeats one
trajectory N times.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.hyperparameters import require_choice
from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset

#: How often a transfer method is prepared: once per (dataset, seed), or once per dataset.
PREPARE_PER = ("seed", "dataset")
#: Seed of the preparation every seed shares with ``prepare_per="dataset"``; also the seed of
#: every preparation made before preparations were per seed.
PREPARE_SEED = 0
#: Hyper-parameter naming an artefact the user made beforehand (a TNAS surrogate); an optimizer
#: given one is not prepared by the comparison.
USER_ARTEFACT_KEY = "surrogate"


@dataclass(frozen=True)
class RunSpec:
    """One search of a comparison."""

    optimizer: str
    dataset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.optimizer}-{self.dataset}-{self.seed}"


@dataclass
class CompareSettings:
    """What a black-box comparison runs.

    Attributes:
        benchmark: path of the benchmark file or folder (workers load it themselves).
        out: output folder.
        optimizers, datasets, seeds: the grid; datasets are canonicalised.
        budget: queries per run, the initial design included.
        search_metric, report_metric: as for ``naslib-bayes search`` (None: defaults).
        hyperparameters: per-optimizer overrides, ``{optimizer: {key: value}}``.
        jobs: worker processes (1 runs in this process).
        prepare_per: ``"seed"`` (a transfer method is meta-trained for every seed) or
            ``"dataset"`` (once per dataset, with seed 0, for all seeds); see the module's text.
    """

    benchmark: Path
    out: Path
    optimizers: list[str]
    datasets: list[str]
    seeds: list[int]
    budget: int
    search_metric: str | None = None
    report_metric: str | None = None
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: int = 1
    prepare_per: str = "seed"

    def __post_init__(self) -> None:
        require_choice("--prepare-per", self.prepare_per, PREPARE_PER)
        canonical = [canonical_dataset(d) for d in self.datasets]
        require_distinct("datasets", self.datasets, canonical)
        require_distinct("optimizers", self.optimizers)
        require_distinct("seeds", self.seeds)
        self.datasets = canonical
        for name in self.optimizers:
            registry.get_spec(name, registry.BLACK_BOX)  # the registry's one-line error
        unknown = sorted(set(self.hyperparameters) - set(self.optimizers))
        if unknown:
            raise UserError(f"hyper-parameters given for {unknown[0]!r}, which is not among the optimizers compared")
        for name in self.optimizers:
            self.resolved_hyperparameters(name)  # a misspelt or mistyped --opt fails before any run

    def resolved_hyperparameters(self, optimizer: str) -> dict[str, Any]:
        """Every hyper-parameter of ``optimizer`` (defaults and overrides), as its runs record them."""
        created = registry.create(optimizer, kind=registry.BLACK_BOX, seed=0, **self.hyperparameters.get(optimizer, {}))
        return _as_json(created.config)

    def user_artefact(self, optimizer: str) -> str | None:
        """The prepared artefact (a surrogate path) the user gave ``optimizer``, if any."""
        value = self.hyperparameters.get(optimizer, {}).get(USER_ARTEFACT_KEY)
        return None if value is None else str(value)

    def user_artefact_sha256(self, optimizer: str) -> str | None:
        """SHA-256 of the file :meth:`user_artefact` names (its ``surrogate.pt`` for a folder), or None."""
        from naslib_bayes.predictors import surrogate_io

        path = self.user_artefact(optimizer)
        return None if path is None else hashlib.sha256(surrogate_io.resolve(path).read_bytes()).hexdigest()

    def preparation_seed(self, seed: int) -> int:
        """The seed of the preparation that the runs of ``seed`` use."""
        return seed if self.prepare_per == "seed" else PREPARE_SEED

    def preparation_of(self, spec: RunSpec) -> "PrepKey | None":
        """(optimizer, dataset, preparation seed) of the preparation ``spec`` needs; None if none."""
        if not needs_preparation(self, spec.optimizer):
            return None
        return spec.optimizer, spec.dataset, self.preparation_seed(spec.seed)

    def runs(self) -> list[RunSpec]:
        """Every run, dataset-major so that a partial comparison covers datasets evenly."""
        return [RunSpec(o, d, s) for d in self.datasets for s in self.seeds for o in self.optimizers]


def require_distinct(what: str, given: Sequence[Any], canonical: Sequence[Any] | None = None) -> None:
    """Refuse a name given twice (or two spellings of one dataset): the grid would hold the same
    run twice, and concurrent workers would write its file twice."""
    canonical = list(given) if canonical is None else list(canonical)
    for value in dict.fromkeys(canonical):
        spellings = [str(g) for g, c in zip(given, canonical) if c == value]
        if len(spellings) == 1:
            continue
        if len(set(spellings)) == 1:
            raise UserError(f"{what}: {value} is given {len(spellings)} times; give each once")
        raise UserError(f"{what}: {', '.join(spellings)} all name {value}; give each once")


#: A preparation: (optimizer, dataset, seed).
PrepKey = tuple[str, str, int]


def needs_preparation(settings: CompareSettings, optimizer: str) -> bool:
    """True when the comparison must prepare ``optimizer`` itself (the user gave no artefact)."""
    has_preparation = registry.get_spec(optimizer, registry.BLACK_BOX).load().has_preparation()
    return has_preparation and settings.user_artefact(optimizer) is None


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from a JSON file (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))
