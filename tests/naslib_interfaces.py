"""NASLib's interfaces as a plugin meets them, written by hand (not read from NASLib).

Each row names a method, the call forms NASLib uses on it (positional and keyword arguments
as NASLib's Trainer, runners and predictor evaluator pass them) and, for optimizers, whether
it is required of black-box or one-shot optimizers. ``tests/test_naslib_interfaces.py`` checks
the project's core classes against this table without NASLib; the NASLib integration tests
check the table against NASLib itself, so a drift on either side shows up.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Call:
    """One way NASLib calls a method: ``args`` positional placeholders, ``kwargs`` keyword names."""

    args: tuple[str, ...] = ()
    kwargs: tuple[str, ...] = ()

    def bind(self, method) -> None:
        """Raise TypeError when ``method`` (bound) cannot accept this call."""
        inspect.signature(method).bind(*self.args, **{k: None for k in self.kwargs})


@dataclass(frozen=True)
class Row:
    name: str
    calls: tuple[Call, ...]
    kinds: frozenset[str] = field(default_factory=lambda: frozenset({"black-box", "one-shot"}))


BB, OS = frozenset({"black-box"}), frozenset({"one-shot"})

#: naslib/optimizers/core/metaclasses.py::MetaOptimizer as naslib/defaults/trainer.py and the runners use it.
META_OPTIMIZER = (
    # runners/bbo/runner.py: adapt_search_space(ss, dataset_api=api); examples/run_darts.py: (ss, dataset)
    Row("adapt_search_space", (Call(("ss",), ("dataset_api",)), Call(("ss", "cifar10")),
                               Call(("ss",), ("scope", "dataset_api")), Call(("ss", "cifar10", None)))),
    Row("new_epoch", (Call(("epoch",)),)),
    Row("step", (Call(("data_train", "data_val")),), OS),  # returns (logits_train, logits_val, train_loss, val_loss)
    Row("train_statistics", (Call(("report_incumbent",)), Call(())), BB),  # returns a 4-tuple
    Row("test_statistics", (Call(()),)),
    Row("before_training", (Call(()),)),
    Row("after_training", (Call(()),)),
    Row("get_final_architecture", (Call(()),)),
    Row("get_op_optimizer", (Call(()),)),
    Row("get_model_size", (Call(()),)),
    Row("get_checkpointables", (Call(()),)),  # a dict with a "model" nn.Module
)
#: class attributes the Trainer reads on an optimizer
META_OPTIMIZER_ATTRIBUTES = {"using_step_function": {"black-box": False, "one-shot": True}}

#: naslib/predictors/predictor.py::Predictor as the Ensemble and the PredictorEvaluator use it.
PREDICTOR = (
    Row("fit", (Call(("xtrain", "ytrain")), Call(("xtrain", "ytrain", "train_info")))),
    Row("query", (Call(("xtest", "info")), Call(("xtest",), ("info",)))),  # Ensemble: query([arch], info)
    Row("get_data_reqs", (Call(()),)),
    Row("pre_process", (Call(()),)),
    Row("set_hyperparams", (Call(("params",)),)),
    Row("get_hyperparams", (Call(()),)),
)
PREDICTOR_DATA_REQS = {"requires_partial_lc", "metric", "requires_hyperparameters", "hyperparams", "unlabeled",
                       "unlabeled_factor"}

#: naslib/defaults/trainer.py::Trainer, as naslib-run drives it.
TRAINER = (
    Row("__init__", (Call(("optimizer", "config"), ("lightweight_output",)),)),
    Row("search", (Call((), ("resume_from", "summary_writer", "report_incumbent")),)),
    Row("evaluate", (Call((), ("resume_from", "dataset_api", "metric")),)),
    Row("build_search_dataloaders", (Call(("config",)),)),  # returns (train, valid, test)
    Row("build_eval_dataloaders", (Call(("config",)),)),
)

#: NasBench201SearchSpace.query(metric, dataset, path=None, epoch=-1, full_lc=False, dataset_api=None)
NB201_QUERY = Row("query", (Call(("metric", "dataset"), ("dataset_api",)), Call(("metric", "dataset"), ("epoch", "dataset_api"))))


def check_rows(obj, rows, kind: str | None = None) -> list[str]:
    """Problems found when checking ``obj`` (an instance, or a class for unbound checks) against ``rows``."""
    problems = []
    for row in rows:
        if kind is not None and kind not in row.kinds:
            continue
        if row.name == "__init__" and inspect.isclass(obj):
            method = obj  # the class's signature is __init__'s without self
        else:
            method = getattr(obj, row.name, None)
        if not callable(method):
            problems.append(f"{row.name}: missing")
            continue
        if inspect.isclass(obj) and row.name != "__init__" and not isinstance(inspect.getattr_static(obj, row.name), staticmethod):
            method = _unbound_as_bound(method)
        for call in row.calls:
            try:
                call.bind(method)
            except TypeError as exc:
                problems.append(f"{row.name}{call.args}{call.kwargs}: {exc}")
    return problems


def _unbound_as_bound(function):
    """A signature view of ``function`` without its ``self`` parameter."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())[1:]

    def view(*args, **kwargs):
        raise NotImplementedError

    view.__signature__ = signature.replace(parameters=parameters)
    return view
