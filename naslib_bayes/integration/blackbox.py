"""naslib-bayes's black-box optimizers as NASLib ``MetaOptimizer`` s, driven by NASLib's Trainer.

:class:`NaslibBlackBox` wraps any black-box optimizer of naslib-bayes's registry (the same
class ``naslib-bayes search`` runs, never a second implementation) so that NASLib's Trainer
drives it like its own RS/RE/BANANAS: ``using_step_function = False``, one ``new_epoch`` per
evaluated architecture, ``train_statistics`` returning ``(train_acc, val_acc, test_acc,
train_time)``, a ``history`` of evaluated models (``torch.nn.Module`` with ``.arch`` and
``.accuracy``) as the checkpointable ``"model"``.

The wrapped optimizer proposes and scores cells as op-index tuples; every value it sees is
read through NASLib's ``search_space.query(Metric.VAL_ACCURACY, dataset, dataset_api=...)``
(:class:`NaslibObjective`, on one probe graph that is never instantiated), and only the
architecture chosen in an epoch is cloned into a NASLib graph for the history.

Importing this module imports NASLib.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.integration import hyperparameter_section, load_naslib
from naslib_bayes.integration.dataset_api import served_domain
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import BlackBoxProblem, Objective
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

_naslib = load_naslib()
Metric = _naslib.query_metrics.Metric


class NaslibObjective(Objective):
    """The counted search metric, read through NASLib's benchmark query.

    Same accounting as :class:`~naslib_bayes.optimizers.blackbox.Objective` (a cell costs one
    query, twice or past the budget raises); the value of a cell is
    ``graph.query(metric, dataset, dataset_api=dataset_api)`` on a probe copy of
    ``search_space`` whose op indices are set without instantiating a network.
    """

    def __init__(self, search_space, dataset: str, dataset_api, budget: int, metric=None):
        self.check_query_budget(budget)
        self.naslib_metric = metric if metric is not None else Metric.VAL_ACCURACY
        self.dataset = dataset
        self.metric = self.naslib_metric.name.lower()
        self.budget = int(budget)
        self.dataset_api = dataset_api
        self.queried: list[nb201.Cell] = []
        self.values: list[float] = []
        self._seen: set[nb201.Cell] = set()
        self._probe = search_space.clone()
        self._probe.instantiate_model = False  # set_op_indices only records the indices
        # which cells have a value, so that optimizers pick among them (None: all, or unknown)
        self.domain = served_domain(dataset_api, dataset)
        self._with_value = None if self.domain is None else frozenset(self.domain)

    def _lookup(self, cell: nb201.Cell) -> float:
        if self._with_value is not None and cell not in self._with_value:
            # NASLib's query raises a KeyError for a cell the file lacks; the query is spent and
            # reads NaN, as in naslib-bayes's own Objective (a mutant may land outside the file)
            return float("nan")
        self._probe.set_op_indices(list(nb201.to_naslib(cell)))
        return float(self._probe.query(self.naslib_metric, self.dataset, dataset_api=self.dataset_api))


class _TargetOnly:
    """What an optimizer's ``check_inputs`` reads of its objective: the target dataset, named as
    :class:`NaslibObjective` names it (no value is read before the search)."""

    def __init__(self, dataset: str):
        self.dataset = dataset


class NaslibBlackBox(_naslib.metaclasses.MetaOptimizer):
    """A naslib-bayes black-box optimizer behind NASLib's ``MetaOptimizer`` interface.

    Args:
        config: NASLib config; reads ``dataset``, ``seed`` and ``search.epochs`` (the query
            budget) and, as the wrapped optimizer's hyper-parameters, the mapping
            ``search.<optimizer>`` when present (e.g. ``search: {tnas: {num_init: 5}}``).
        optimizer: name in naslib-bayes's registry (``naslib-bayes list``), black-box kind.
        source: evaluations on other datasets for transfer methods (a naslib-bayes
            ``Benchmark`` without the target dataset), or None.
        **hyperparameters: override those from the config.
    """

    using_step_function = False

    def __init__(self, config, optimizer: str = "rs", source=None, **hyperparameters: Any):
        super().__init__()
        self.config = config
        self.dataset = config.dataset
        self.budget = int(config.search.epochs)
        self.optimizer_name = optimizer
        spec = registry.get_spec(optimizer, kind=registry.BLACK_BOX)
        params = {**hyperparameter_section(config.search, optimizer), **hyperparameters}
        self.core = spec.load()(seed=int(config.seed), **params)
        self.source = source
        self.performance_metric = Metric.VAL_ACCURACY
        self.history = torch.nn.ModuleList()
        # The history's graphs hold no tensors, so NASLib's checkpoint of it would be empty; this
        # count is what it holds, so that an optimizer loading it replays the queries (_catch_up).
        self.history.register_buffer("queries", torch.zeros((), dtype=torch.long))
        self.search_space = None
        self.dataset_api = None

    # ---- NASLib's MetaOptimizer -----------------------------------------------------------
    def adapt_search_space(self, search_space, dataset=None, scope=None, dataset_api=None, **kwargs):
        """Both NASLib call forms: ``(ss, dataset_api=api)`` (runners) and ``(ss, dataset, scope)``."""
        if not getattr(search_space, "QUERYABLE", False) or search_space.get_type() != "nasbench201":
            raise UserError(f"{self.optimizer_name} runs in NASLib on NAS-Bench-201 (a queryable benchmark), "
                            f"not on {search_space.get_type()}")
        if dataset is not None:
            self.dataset = dataset
        self.search_space = search_space.clone()  # the template graphs are cloned from
        self.scope = scope if scope else search_space.OPTIMIZER_SCOPE
        self.dataset_api = dataset_api
        objective = NaslibObjective(self.search_space, self.dataset, dataset_api, self.budget)
        problem = BlackBoxProblem(objective, source=kwargs.get("source", self.source))
        self.core.adapt_search_space(problem.space, dataset_api=problem)
        self.problem = problem

    def check_inputs(self, dataset_api) -> None:
        """Refuse now what :meth:`adapt_search_space` would refuse after a command made its output
        folder: a budget beyond the space, and the files the wrapped optimizer's setup reads (tnas:
        its surrogate), as ``naslib-bayes search`` reads them before it writes anything."""
        Objective.check_query_budget(self.budget)
        self.core.check_inputs(BlackBoxProblem(_TargetOnly(self.dataset), source=self.source))

    def new_epoch(self, epoch: int) -> None:
        """Query the cell of ``epoch``, after replaying the epochs before it that this object has not run.

        NASLib's Trainer resumed from a checkpoint starts at the epoch after the checkpoint's with
        this object fresh: the history it checkpoints holds no tensors (only the count of queries),
        so loading it restores no query. The seeded optimizer on the benchmark's fixed values
        queries the same cells again, so replaying makes the resumed search the uninterrupted one.
        """
        if epoch < len(self.history):
            raise UserError(f"epoch {epoch} was run already ({len(self.history)} queries made): "
                            "a black-box search goes one epoch at a time")
        for earlier in range(len(self.history), epoch + 1):
            self._query(earlier)

    def _query(self, epoch: int) -> None:
        self.core.new_epoch(epoch)
        cell, value = self.core.history[-1]
        model = torch.nn.Module()
        model.arch = self._graph(cell)  # only the chosen architecture becomes a graph
        model.arch_hash = nb201.to_naslib(cell)
        model.accuracy = value
        self.history.append(model)
        self.history.queries.fill_(len(self.history))

    def _catch_up(self) -> None:
        """Replay the queries a loaded checkpoint counts that this object has not made: Trainer.evaluate
        in a later process loads the search's checkpoint into a fresh optimizer (seeded, on fixed values)."""
        for epoch in range(len(self.history), int(self.history.queries)):
            self._query(epoch)

    def _graph(self, cell: nb201.Cell):
        graph = self.search_space.clone()
        graph.set_spec(list(nb201.to_naslib(cell)), dataset_api=self.dataset_api)
        return graph

    def _accuracies(self) -> np.ndarray:
        """The search metric of every query so far (NaN where a partial file has no value), (n,)."""
        return np.asarray([m.accuracy for m in self.history], dtype=float)

    def _has_value(self) -> bool:
        return bool(np.isfinite(self._accuracies()).any())

    def _best(self):
        values = self._accuracies()
        if not np.isfinite(values).any():
            self.problem.objective.incumbent()  # NoValueQueried, naming the file and dataset
        return self.history[int(np.nanargmax(values))]

    def train_statistics(self, report_incumbent: bool = True):
        model = self._best() if report_incumbent and self._has_value() else self.history[-1]
        if np.isnan(model.accuracy):  # a cell a partial file lacks: NASLib's query would raise KeyError
            return (float("nan"),) * 4
        arch = model.arch

        def query(metric):
            return arch.query(metric, self.dataset, dataset_api=self.dataset_api)

        return (query(Metric.TRAIN_ACCURACY), query(Metric.VAL_ACCURACY), query(Metric.TEST_ACCURACY),
                query(Metric.TRAIN_TIME))

    def test_statistics(self):
        if not self._has_value():
            return None
        return self._best().arch.query(Metric.RAW, self.dataset, dataset_api=self.dataset_api)

    def get_final_architecture(self):
        self._catch_up()
        return self._best().arch

    def get_op_optimizer(self):
        return None

    def get_model_size(self) -> float:
        return 0.0

    def get_checkpointables(self):
        return {"model": self.history}

    # ---- for naslib-run's result.json --------------------------------------------------------
    def trajectory(self) -> list[dict[str, Any]]:
        return self.problem.objective.trajectory()

    def result_extras(self) -> dict[str, Any]:
        return self.core.result_extras()
