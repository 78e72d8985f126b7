"""One NASLib experiment from a NASLib config file: search, then evaluate, with NASLib's Trainer.

This is what ``naslib-bayes naslib-run`` does, as a library:

1. :func:`build_config` reads a NASLib yaml (its ``search``/``evaluation`` keys) on top of
   NASLib's own defaults for the optimizer's kind (``defaults/darts_defaults.yaml`` for one-shot
   optimizers, ``runners/bbo/discrete_config.yaml`` for black-box ones) and sets the keys NASLib's
   Trainer reads but those defaults omit (``save_arch_weights``, ``search.seed``, ``save``...).
2. :func:`run_experiment` builds the search space and the optimizer (NASLib's own or
   naslib-bayes's), adapts it, runs ``Trainer.search`` and ``Trainer.evaluate``, and returns a
   result dict (schema ``result.json``).

Data never comes from downloads: a benchmark file loaded by naslib-bayes is served to NASLib
as its NB201 ``dataset_api`` (:mod:`naslib_bayes.integration.dataset_api`), and one-shot
searches train on images read by :mod:`naslib_bayes.integration.data`. Without
``benchmark``, NASLib's own ``get_dataset_api`` (its pickles in its ``data`` folder) is used.

Importing this module imports NASLib.
"""

from __future__ import annotations

import importlib
import logging
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from naslib_bayes import results
from naslib_bayes.errors import UserError, cause
from naslib_bayes.integration import VERIFIED_NASLIB_COMMIT, hyperparameter_section, load_naslib
from naslib_bayes.integration.dataset_api import curve_length, naslib_dataset_api, served_metric
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.hyperparameters import MAX_SEED
from naslib_bayes.search_spaces.darts import genotype
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import finite_or_none

logger = logging.getLogger(__name__)
_naslib = load_naslib()
CfgNode = importlib.import_module("fvcore.common.config").CfgNode

ONE_SHOT = registry.ONE_SHOT
BLACK_BOX = registry.BLACK_BOX


@dataclass(frozen=True)
class NaslibOptimizer(registry.OptimizerSpec):
    """How ``naslib-run`` builds one optimizer: a registry entry plus where its class comes from."""

    origin: str  # "naslib" or "naslib-bayes"
    core: str | None = None  # naslib-bayes registry name a wrapper runs

    def create(self, config, source=None):
        cls = self.load()
        if self.origin == "naslib" and self.kind == ONE_SHOT:
            return cls(**config.search)  # as NASLib's examples/run_darts.py does
        if self.origin == "naslib":
            return cls(config)  # as NASLib's runners/bbo/runner.py does
        if self.core is None:
            return cls(config)  # a NASLib-native class of naslib-bayes (bayesnas)
        return cls(config, optimizer=self.core, source=source)


def _specs(*specs: NaslibOptimizer) -> dict[str, NaslibOptimizer]:
    return {s.name: s for s in specs}


OPTIMIZERS = _specs(
    NaslibOptimizer("darts", ONE_SHOT, "naslib.optimizers:DARTSOptimizer", "NASLib's DARTS (first order)", "naslib"),
    NaslibOptimizer("gdas", ONE_SHOT, "naslib.optimizers:GDASOptimizer", "NASLib's GDAS", "naslib"),
    NaslibOptimizer("drnas", ONE_SHOT, "naslib.optimizers:DrNASOptimizer", "NASLib's DrNAS", "naslib"),
    NaslibOptimizer("rs", BLACK_BOX, "naslib.optimizers:RandomSearch", "NASLib's random search", "naslib"),
    NaslibOptimizer("re", BLACK_BOX, "naslib.optimizers:RegularizedEvolution", "NASLib's regularized evolution", "naslib"),
    NaslibOptimizer("ls", BLACK_BOX, "naslib.optimizers:LocalSearch", "NASLib's local search", "naslib"),
    NaslibOptimizer("bananas", BLACK_BOX, "naslib.optimizers:Bananas", "NASLib's BANANAS", "naslib"),
    NaslibOptimizer("npenas", BLACK_BOX, "naslib.optimizers:Npenas", "NASLib's NPENAS", "naslib"),
)
# naslib-bayes's black-box optimizers, wrapped as NASLib MetaOptimizers; a name NASLib already
# uses (rs) is offered as "naslib-bayes:<name>".
for _name in registry.names(registry.BLACK_BOX):
    _key = f"naslib-bayes:{_name}" if _name in OPTIMIZERS else _name
    OPTIMIZERS[_key] = NaslibOptimizer(_key, BLACK_BOX, "naslib_bayes.integration.blackbox:NaslibBlackBox",
                                       f"naslib-bayes's {registry.get_spec(_name).summary}", "naslib-bayes", _name)

# naslib-bayes's NASLib-native classes: TNAS (the wrapper above, plus a surrogate file or
# meta-training on the benchmark's other datasets) and BayesNAS on NASLib's own graphs.
OPTIMIZERS["tnas"] = NaslibOptimizer("tnas", BLACK_BOX, "naslib_bayes.integration.tnas:TNASOptimizer",
                                     "naslib-bayes's TNAS (meta-learned deep-kernel GP BO)", "naslib-bayes", "tnas")
OPTIMIZERS["bayesnas"] = NaslibOptimizer("bayesnas", ONE_SHOT, "naslib_bayes.integration.bayesnas:BayesNASOptimizer",
                                         "naslib-bayes's BayesNAS on NASLib's graphs", "naslib-bayes")

_DEFAULT_CONFIGS = {ONE_SHOT: "nas", BLACK_BOX: "bbo-bs"}
SEARCH_SPACES = {"nasbench201": "NasBench201SearchSpace", "darts": "NasBench301SearchSpace",
                 "nasbench301": "NasBench301SearchSpace"}


def get_optimizer(name: str) -> NaslibOptimizer:
    spec = OPTIMIZERS.get(name)
    if spec is None:
        raise UserError(f"unknown optimizer {name!r} for naslib-run; valid: {', '.join(OPTIMIZERS)}")
    return spec


# ---- configuration --------------------------------------------------------------------
def _read_yaml(path: Path):
    try:
        with open(path) as handle:
            config = CfgNode.load_cfg(handle)
    except OSError as exc:
        raise UserError(f"cannot read NASLib config {path}: {exc.strerror}") from None
    except Exception as exc:  # yaml or CfgNode errors
        raise UserError(f"{path}: not a NASLib config file ({cause(exc)})") from None
    if not isinstance(config, CfgNode):
        raise UserError(f"{path}: a NASLib config is a YAML mapping")
    return config


def _set_dotted(config, key: str, value, defaults=None) -> None:
    """``config[key] = value`` for a dotted ``key``; a value of another kind than NASLib's default of
    ``key`` (in ``defaults``) is refused as the config file's merge refuses it, instead of reaching
    NASLib's optimizer (``--set search.learning_rate=abc`` was a TypeError traceback from torch)."""
    default = _default_at(defaults, key)
    if value is not None and default is not None and _kind(value) != _kind(default):
        raise UserError(f"--set {key}={value!r}: NASLib's {key} is {_kind(default)} ({default!r})")
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        if part not in node:
            node[part] = CfgNode(new_allowed=True)
        node = node[part]
        if not isinstance(node, CfgNode):
            raise UserError(f"--set {key}: {part} is not a section")
    if isinstance(node.get(leaf), CfgNode):  # replaced whole, it would lose NASLib's defaults of its keys
        raise UserError(f"--set {key}: a section of NASLib's config, set its keys ({key}.KEY=VALUE)")
    node[leaf] = value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value) -> str:
    """What NASLib's config merge takes in place of ``value``: numbers of either kind, as in a file."""
    if isinstance(value, bool):
        return "true or false"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _default_at(defaults, key: str):
    """NASLib's default of the dotted ``key`` (None: no default, or ``defaults`` not given)."""
    node = defaults
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict) else node


def _fit_to_defaults(user, defaults, config_file, path: str = "") -> None:
    """Make ``user`` merge onto NASLib's ``defaults`` as NASLib, which reads a config file as written, runs it.

    A default number that ``user`` gives as a number of the other kind (``train_portion: 1``,
    ``grad_clip: 5.0``) is cleared, so that the merge takes the user's instead of refusing it
    beside 0.5 and 5; an empty section (``search:`` with no keys) keeps the defaults. A section
    in one where the other has a value is one line naming the key, instead of the merge's
    message quoting the whole section.
    """
    for key, value in list(user.items()):
        if not isinstance(value, dict):  # a section as it is: decoding copies it
            value = CfgNode._decode_cfg_value(value)
        default, name = defaults.get(key), path + key
        if isinstance(default, CfgNode):
            if value is None:
                del user[key]
            elif not isinstance(value, CfgNode):
                raise UserError(f"{config_file}: {name} is a section of NASLib's config, got {value!r}")
            else:
                _fit_to_defaults(value, default, config_file, name + ".")
        elif isinstance(value, CfgNode) and default is not None:
            raise UserError(f"{config_file}: {name} is a section here, NASLib's is {default!r}")
        elif _is_number(value) and _is_number(default) and type(value) is not type(default):
            defaults[key] = None  # the merge takes any value in place of None


def build_config(config_file: str | Path, out: str | Path, optimizer: str | None = None, seed: int | None = None,
                 overrides: Iterable[tuple[str, Any]] = (), make_folders: bool = True):
    """A NASLib ``CfgNode`` ready for NASLib's Trainer.

    ``config_file`` is merged onto NASLib's defaults for the optimizer's kind; ``optimizer`` and
    ``seed`` override its keys, then ``overrides`` (``("search.epochs", 20)`` pairs). ``save``
    (NASLib's output folder) is ``out``, with the Trainer's folders made in it unless
    ``make_folders`` is False (a command checks the config before it makes ``out``; then
    :func:`make_output_folders`).
    """
    user = _read_yaml(Path(config_file))
    name = optimizer or user.get("optimizer")
    if not name:
        raise UserError(f"{config_file}: no 'optimizer' key; pass --optimizer")
    spec = get_optimizer(name)
    config = _naslib.utils.load_default_config(config_type=_DEFAULT_CONFIGS[spec.kind])
    config.set_new_allowed(True)
    for section in ("search", "evaluation"):
        if section not in config:
            config[section] = CfgNode(new_allowed=True)
        config[section].set_new_allowed(True)
    naslib_defaults = config.clone()  # before _fit_to_defaults clears a default the file's number replaces
    _fit_to_defaults(user, config, config_file)
    try:
        config.merge_from_other_cfg(user)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise UserError(f"{config_file}: does not fit NASLib's defaults ({exc})") from None
    config.optimizer = name
    if seed is not None:
        config.seed = int(seed)
    for key, value in overrides:
        _set_dotted(config, key, value, naslib_defaults)
    if spec.origin == "naslib":
        _refuse_nulls(config, naslib_defaults, config_file, {key for key, _ in overrides})
    # Keys NASLib's Trainer reads that its default files omit (get_config_from_args sets some).
    config.search.seed = config.seed
    config.setdefault("save_arch_weights", False)
    config.setdefault("plot_arch_weights", False)
    config.setdefault("config_id", 0)
    config.setdefault("eval_only", False)
    config.setdefault("resume", False)
    config.setdefault("model_path", None)
    config.setdefault("gpu", None)
    config.search.setdefault("checkpoint_freq", 1000)
    config.search.setdefault("learning_rate_min", 0.0)
    config.search.setdefault("fidelity", -1)
    _check_counts(config, config_file)
    config.out_dir = str(out)
    config.save = str(out)
    config.setdefault("data", str(Path(_naslib.utils.get_project_root()) / "data"))
    if make_folders:
        make_output_folders(config)
    return config


#: NASLib ``search`` keys to which naslib-bayes gives null a meaning (the image loaders': every image).
_NULL_MEANS_SOMETHING = frozenset({"data_size"})


def _refuse_nulls(config, defaults, config_file, set_keys) -> None:
    """A null ``search`` key that NASLib's defaults give a value is one line naming it: NASLib's
    optimizers read them as they are (darts' learning_rate reached torch's SGD, bananas' k a slice
    once its initial queries were made), failing late or running with None."""
    for name, default in defaults.search.items():
        if default is not None and name not in _NULL_MEANS_SOMETHING and config.search.get(name, default) is None:
            key = f"search.{name}"
            where = f"--set {key}=null" if key in set_keys else f"{config_file}: {key} is null"
            raise UserError(f"{where}: NASLib's {config.optimizer} reads it as it is; give a value, "
                            f"or leave it out for NASLib's default ({default!r})")


def make_output_folders(config) -> None:
    """The ``search`` and ``eval`` folders NASLib's Trainer writes into, under ``config.save``."""
    for sub in ("search", "eval"):
        (Path(config.save) / sub).mkdir(parents=True, exist_ok=True)


#: Whole numbers NASLib's Trainer counts with, and their ranges: otherwise a traceback after the
#: search (no epochs: no model_final.pth to evaluate), a ZeroDivisionError or numpy's seed error.
_COUNTS = (("seed", 0, MAX_SEED), ("search.epochs", 1, None), ("search.checkpoint_freq", 1, None))


def _check_counts(config, config_file) -> None:
    for key, low, high in _COUNTS:
        node = config
        for part in key.split("."):
            node = node[part]
        whole = isinstance(node, int) and not isinstance(node, bool)
        if not whole or node < low or (high is not None and node > high):
            wanted = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise UserError(f"{config_file}: {key} must be a whole number {wanted}, got {node!r}")


# ---- the experiment ---------------------------------------------------------------------
def _supported_space(config) -> str:
    """The NASLib class name of ``config.search_space``, or one line naming the supported ones."""
    cls_name = SEARCH_SPACES.get(config.search_space)
    if cls_name is None:
        raise UserError(f"search_space {config.search_space!r} is not supported by naslib-run; "
                        f"supported: {', '.join(SEARCH_SPACES)}")
    return cls_name


def _search_space(config, num_classes: int | None, in_channels: int | None):
    cls_name = _supported_space(config)
    kwargs = {}
    if num_classes is not None:
        kwargs.update(n_classes=num_classes, in_channels=in_channels)
    if cls_name == "NasBench301SearchSpace" and "auxiliary" in config.search:
        # NASLib's retraining head assumes 32x32 inputs; small images need it off
        kwargs["auxiliary"] = bool(config.search.auxiliary)
    return getattr(_naslib.search_spaces, cls_name)(**kwargs)


def _dataset_api(config, benchmark, warn):
    if config.search_space != "nasbench201":
        return None
    if benchmark is not None:
        if config.dataset not in ("cifar10", "cifar100", "ImageNet16-120"):
            raise UserError(f"dataset {config.dataset!r} is not a NAS-Bench-201 dataset (cifar10, cifar100, ImageNet16-120)")
        benchmark.metrics(config.dataset)  # UserError when the file lacks the dataset
        _require_every_cell(benchmark, config.dataset)
        return naslib_dataset_api(benchmark, warn=warn)
    try:
        return _naslib.utils.get_dataset_api(config.search_space, config.dataset)
    except (AssertionError, FileNotFoundError) as exc:
        raise UserError(f"no NAS-Bench-201 data for NASLib ({exc or 'its nb201 pickles are missing'}); "
                        "pass --benchmark PATH with a benchmark file naslib-bayes reads") from None


def _require_every_cell(benchmark, dataset: str) -> None:
    """NASLib's optimizers query any cell they sample and fail on a cell the file lacks, so a
    partial benchmark (e.g. NASLib's zero-cost sample) is refused before NASLib starts."""
    metric = served_metric(benchmark, dataset)
    have = 0 if metric is None else benchmark.count_values(dataset, metric)
    if metric is not None and have < nb201.NUM_CELLS:
        raise UserError(f"{benchmark.source} has {dataset} {metric} for {have:,} of {nb201.NUM_CELLS:,} "
                        "cells only; NASLib's optimizers need every cell: use a complete benchmark file")


def _clamp_fidelity(config, dataset_api, warn) -> None:
    """Use the final value (-1) where the benchmark's curves lack ``search.fidelity``'s epoch, with a
    warning unless the fidelity is NASLib's default (108, an NB101 epoch), which no user asked for."""
    length = curve_length(dataset_api) if dataset_api is not None else None
    fidelity = config.search.get("fidelity", -1)
    if isinstance(fidelity, bool) or not isinstance(fidelity, int):
        raise UserError(f"search.fidelity must be a whole number (an epoch; -1: final), got {fidelity!r}")
    if length == 1 and fidelity != -1:
        # a one-entry curve holds the final value: its index 0 is not the accuracy after one epoch
        unheld = "is not an epoch the benchmark's learning curves hold (the final value only)"
    elif length is not None and not -length <= fidelity < length:
        unheld = f"is beyond the benchmark's {length}-entry learning curves"
    else:
        return
    if fidelity != _naslib_default_fidelity():
        warn(f"search.fidelity {fidelity} {unheld}: using -1 (final)")
    config.search.fidelity = -1


def _naslib_default_fidelity():
    return _naslib.utils.load_default_config(config_type=_DEFAULT_CONFIGS[BLACK_BOX]).search.get("fidelity", -1)


#: The ops of NASLib's DARTS hash by op index: ``get_hash()`` of its ``NasBench301SearchSpace`` is,
#: per cell (normal, then reduction), two ``(input, op index)`` pairs per intermediate node, the
#: inputs numbered as a DARTS genotype numbers them (0 and 1: the previous cells, 2...: the nodes).
NASLIB_DARTS_HASH_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                         "dil_conv_3x3", "dil_conv_5x5")


def darts_genotype(naslib_hash) -> Genotype:
    """The DARTS genotype ``train --arch`` reads, from NASLib's DARTS hash (every node concatenated,
    as NASLib's cells do)."""
    normal, reduce = ([(NASLIB_DARTS_HASH_OPS[op], int(source)) for source, op in cell] for cell in naslib_hash)
    nodes = list(range(2, 2 + len(normal) // 2))
    return genotype.from_cells(normal, nodes, reduce, nodes)


def _final_architecture(graph) -> tuple[str | dict | None, list[int] | None]:
    """The final architecture as the ``train`` command reads it (an NB201 string, a DARTS genotype
    object), and its NB201 op indices (None on DARTS)."""
    if graph is None:
        return None, None
    if getattr(graph, "space_name", None) == "nasbench201" or graph.get_type() == "nasbench201":
        cell = nb201.from_naslib(graph.get_hash())
        return nb201.to_string(cell), list(cell)
    return darts_genotype(graph.get_hash()).to_json(), None


def _finite(value) -> float | None:
    """NASLib's numbers as JSON floats; what is not a number (NASLib leaves some unset) is None."""
    try:
        return finite_or_none(value)
    except (TypeError, ValueError):
        return None


def _check_runnable(spec: NaslibOptimizer, config, dataset_api, image_data, warn) -> None:
    """Refuse an optimizer this experiment cannot run; a black-box search's fidelity is fitted to the benchmark."""
    if spec.kind == BLACK_BOX:
        if config.search_space != "nasbench201":
            raise UserError(f"black-box optimizer {spec.name} runs on nasbench201 (a queryable benchmark) in naslib-run")
        _clamp_fidelity(config, dataset_api, warn)
    if spec.kind == ONE_SHOT and image_data is None:
        raise UserError(f"one-shot optimizer {spec.name} trains a supernet: pass --search-data (digits or mnist)")


def _transfer_source(spec: NaslibOptimizer, config, benchmark):
    """The benchmark's other datasets, for naslib-bayes's black-box (transfer) methods; None if there are none."""
    if benchmark is None or spec.origin != "naslib-bayes" or spec.kind != BLACK_BOX:
        return None
    source = benchmark.without(config.dataset)
    return source if source.datasets else None


def _adapted_optimizer(spec: NaslibOptimizer, config, benchmark, image_data, dataset_api):
    """The optimizer on a fresh search space (seeded first), adapted as NASLib's own runners do."""
    _naslib.utils.set_seed(config.seed)
    shape = (image_data.num_classes, image_data.in_channels) if image_data is not None else (None, None)
    search_space = _search_space(config, *shape)
    optimizer = spec.create(config, source=_transfer_source(spec, config, benchmark))
    if spec.kind == BLACK_BOX:
        optimizer.adapt_search_space(search_space, dataset_api=dataset_api)  # as runners/bbo/runner.py
    elif spec.origin == "naslib":
        optimizer.adapt_search_space(search_space, config.dataset)  # as examples/run_darts.py
    else:
        optimizer.adapt_search_space(search_space, config.dataset, dataset_api=dataset_api)
    return optimizer


def _whole_setting(config, key: str, low: int, unset_means: str | None = None, default=None) -> int | None:
    """``config``'s ``section.name`` as a whole number of at least ``low``, or one line naming the key
    (instead of int()'s or torch's traceback, or a fraction truncated without a word). With
    ``unset_means``, an absent, None or 0 value is None (e.g. every image)."""
    section, name = key.split(".")
    value = config[section].get(name, default)
    whole = isinstance(value, int) and not isinstance(value, bool)
    if unset_means is not None and (value is None or (whole and value == 0)):
        return None
    if not whole or value < low:
        unset = f" (unset: {unset_means})" if unset_means is not None else ""
        raise UserError(f"{key} must be a whole number of at least {low}{unset}, got {value!r}")
    return value


def _train_portion(config) -> float:
    value = config.search.get("train_portion")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise UserError(f"search.train_portion must be a number above 0 and at most 1, got {value!r}")
    return float(value)


def _loader_settings(config) -> dict[str, Any]:
    """The image loaders' settings, each checked (a one-line UserError naming the key)."""
    batch_size = _whole_setting(config, "search.batch_size", 1)
    return {"batch_size": batch_size, "train_portion": _train_portion(config),
            "data_size": _whole_setting(config, "search.data_size", 2, unset_means="every image"),
            "eval_batch_size": _whole_setting(config, "evaluation.batch_size", 1, default=batch_size),
            "eval_data_size": _whole_setting(config, "evaluation.data_size", 1, unset_means="every image")}


def _image_loaders(config, image_data) -> tuple[Any, Any]:
    """(search loaders, evaluation loaders) over ``image_data`` for NASLib's Trainer; (None, None) without it."""
    from naslib_bayes.integration import data as image_loaders

    if image_data is None:
        return None, None
    s = _loader_settings(config)
    loaders = image_loaders.search_loaders(image_data, s["batch_size"], s["train_portion"], int(config.seed),
                                           s["data_size"])
    eval_loaders = image_loaders.eval_loaders(image_data, s["eval_batch_size"], int(config.seed), s["eval_data_size"])
    return loaders, eval_loaders


def _search_and_evaluate(trainer, optimizer, dataset_api):
    """Run ``Trainer.search`` and ``Trainer.evaluate``; returns (final architecture graph, its evaluation)."""
    trainer.search(resume_from="", summary_writer=None, report_incumbent=True)
    final_graph = optimizer.get_final_architecture()
    if final_graph.QUERYABLE and dataset_api is None:
        # The DARTS space is "queryable" only through NASLib's NB301 surrogate; without it the
        # final architecture is retrained from scratch with config.evaluation on the given images.
        final_graph.QUERYABLE = False
        evaluation = trainer.evaluate(best_arch=final_graph, dataset_api=None, metric=None)
    else:
        evaluation = trainer.evaluate(resume_from="", dataset_api=dataset_api, metric=None)
    return final_graph, evaluation


def _benchmark_accuracy(benchmark, op_indices: list[int] | None) -> dict[str, float | None] | None:
    """The final NB201 cell's test accuracy on every benchmark dataset that has it (None: no benchmark or cell)."""
    if benchmark is None or op_indices is None:
        return None
    return benchmark.query_everywhere(op_indices, "test_accuracy")


def _search_metric(config, benchmark) -> str:
    """The metric a black-box search selected on: NASLib queries validation accuracy, which a
    naslib-bayes benchmark serves as its test accuracy where the file has no validation accuracy
    (the NATS-Bench CSV), so the search saw the test accuracy, as ``search`` records for that file."""
    if benchmark is None or config.search_space != "nasbench201":
        return "val_accuracy"  # NASLib's own data
    return served_metric(benchmark, config.dataset) or "val_accuracy"


def _searched_dataset(spec: NaslibOptimizer, config, image_data) -> str:
    """What the search ran on: a one-shot supernet trained on ``image_data``, not on the config's
    ``dataset``, which names only the benchmark's dataset its final cell is read on."""
    return image_data.name if spec.kind == ONE_SHOT and image_data is not None else config.dataset


def _evaluation_dataset(config, image_data) -> str:
    """The dataset of NASLib's evaluation: the config's on NB201 (a benchmark query), the images the
    final architecture was retrained on elsewhere (NASLib's DARTS space)."""
    return config.dataset if config.search_space == "nasbench201" or image_data is None else image_data.name


def _naslib_block(spec: NaslibOptimizer, config, final_graph, evaluation, image_data, trajectory) -> dict[str, Any]:
    """result.json's ``naslib``: how NASLib ran the optimizer, its final graph's hash, its evaluation
    and its search curves."""
    black_box = spec.kind == BLACK_BOX
    return {
        "kind": spec.kind,
        "origin": spec.origin,
        "final_architecture_hash": _plain(final_graph.get_hash()) if final_graph is not None else None,
        "evaluation": _finite(evaluation),
        "evaluation_dataset": _evaluation_dataset(config, image_data),
        "search_data": image_data.name if image_data is not None else None,
        "incumbent_valid_acc": [_finite(v) for v in trajectory.valid_acc] if black_box else None,
        "incumbent_test_acc": [_finite(v) for v in trajectory.test_acc] if black_box else None,
        "train_acc": [_finite(v) for v in trajectory.train_acc],
        "valid_acc": [_finite(v) for v in trajectory.valid_acc],
        "verified_naslib_commit": VERIFIED_NASLIB_COMMIT,
    }


def _experiment_result(spec: NaslibOptimizer, config, optimizer, final_graph, evaluation, trajectory, benchmark,
                       image_data, start: float) -> dict:
    """result.json of the experiment (``final_graph``: NASLib's graph of the final architecture)."""
    arch, op_indices = _final_architecture(final_graph)
    return results.new_result(
        "naslib-run",
        optimizer=spec.name,
        search_space=config.search_space,
        dataset=_searched_dataset(spec, config, image_data),
        seed=int(config.seed),
        budget=int(config.search.epochs) if spec.kind == BLACK_BOX else None,
        search_metric=_search_metric(config, benchmark) if spec.kind == BLACK_BOX else None,
        report_metric="test_accuracy",
        final_architecture=arch,
        final_architecture_op_indices=op_indices,
        benchmark_accuracy=_benchmark_accuracy(benchmark, op_indices),
        trajectory=optimizer.trajectory() if hasattr(optimizer, "trajectory") else None,
        wall_time_s=time.perf_counter() - start,
        config=_plain(config),
        notes=list(benchmark.notes) if benchmark is not None else [],
        **(optimizer.result_extras() if hasattr(optimizer, "result_extras") else {}),
        naslib=_naslib_block(spec, config, final_graph, evaluation, image_data, trajectory),
    )


@dataclass
class ExperimentPlan:
    """An experiment whose settings are checked, before anything is trained or written: its
    optimizer, NASLib's ``dataset_api`` and when the experiment started."""

    spec: NaslibOptimizer
    dataset_api: Any
    started: float


def plan_experiment(config, benchmark=None, image_data=None,
                    warn: Callable[[str], None] = logger.warning) -> ExperimentPlan:
    """Check one experiment (arguments as :func:`run_experiment`): the optimizer, the benchmark
    and data it needs, the search space and the image loaders' settings, so that a command
    refuses them before it makes its output folder."""
    started = time.perf_counter()
    spec = get_optimizer(config.optimizer)
    dataset_api = _dataset_api(config, benchmark, warn)
    _check_runnable(spec, config, dataset_api, image_data, warn)
    _supported_space(config)
    if image_data is not None:
        _loader_settings(config)
    if spec.origin == "naslib-bayes":  # its hyper-parameters, under its name in search
        hyperparameter_section(config.search, spec.core or spec.name)
        _check_own_optimizer(spec, config, benchmark, dataset_api)
    return ExperimentPlan(spec, dataset_api, started)


def _check_own_optimizer(spec: NaslibOptimizer, config, benchmark, dataset_api) -> None:
    """Build naslib-bayes's optimizer once, unadapted and thrown away, so that its hyper-parameters
    and (black-box) the files its setup reads are refused before a command makes its output folder."""
    optimizer = spec.create(config, source=_transfer_source(spec, config, benchmark))
    if spec.kind == BLACK_BOX:
        optimizer.check_inputs(dataset_api)


def run_experiment(config, benchmark=None, image_data=None, warn: Callable[[str], None] = logger.warning,
                   plan: ExperimentPlan | None = None) -> dict:
    """Search and evaluate one NASLib experiment; returns a ``result.json`` dict.

    Args:
        config: from :func:`build_config`.
        benchmark: a naslib-bayes NB201 :class:`Benchmark` served as NASLib's ``dataset_api``
            (None: NASLib's own ``get_dataset_api``).
        image_data: :class:`naslib_bayes.integration.data.ImageData` for one-shot search and for
            retraining non-queryable architectures.
        plan: from :func:`plan_experiment` with the same arguments (None: made here).
    """
    from naslib_bayes.integration.trainer import LoaderTrainer

    plan = plan or plan_experiment(config, benchmark, image_data, warn)
    start, spec, dataset_api = plan.started, plan.spec, plan.dataset_api
    optimizer = _adapted_optimizer(spec, config, benchmark, image_data, dataset_api)
    loaders, eval_loaders = _image_loaders(config, image_data)
    trainer = LoaderTrainer(optimizer, config, lightweight_output=True, search_loaders=loaders, eval_loaders=eval_loaders)
    final_graph, evaluation = _search_and_evaluate(trainer, optimizer, dataset_api)
    return _experiment_result(spec, config, optimizer, final_graph, evaluation, trainer.search_trajectory,
                              benchmark, image_data, start)


def _plain(node):
    """A CfgNode as plain JSON-able dicts and lists."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    return str(node)
