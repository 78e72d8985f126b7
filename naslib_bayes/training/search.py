"""One one-shot search, from a configuration to a result dict (``naslib-bayes search`` and benchmarks).

The search images are the training split of the dataset (for MNIST without its training
files: the seeded 8,000-image part of the 8,000/2,000 split of the test file); the held-out
split is never seen by the search. The split is drawn with ``data_seed`` (default 0, the same
for every search seed), the supernet's initialisation, batch order and augmentation with
``seed``.

A search's checkpoint records its settings (:func:`run_settings`); ``resume`` continues only a
run with the same.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from naslib_bayes import results
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.hyperparameters import whole_numbers
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark
from naslib_bayes.training import checkpoint as ckpt

SEARCH_SPACES = {"nb201": "nasbench201", "nasbench201": "nasbench201", "nas-bench-201": "nasbench201", "darts": "darts"}
#: CPU-sized supernet defaults per space: (channels, cells). NB201: cells per stage; DARTS: cells in all.
DEFAULT_SIZES = {"nasbench201": (8, 1), "darts": (16, 8)}
TIMING_KEYS = ("wall_time_s", "epoch_times_s", "epoch_cpu_times_s", "architecture_update_times_s")
#: SearchConfig fields that do not change what a search computes: a run may resume with others.
NOT_OF_THE_RUN = ("checkpoint_every", "device", "data_root")
#: The run settings' key of the metric a derived cell is scored by on a benchmark.
SCORED_BY = "--report-metric"
#: SearchConfig fields set by an option of ``naslib-bayes search`` (the others keep their names in messages).
OPTION_OF_FIELD = {"optimizer": "--optimizer", "search_space": "--search-space", "dataset": "--dataset",
                   "seed": "--seed", "channels": "--channels", "cells": "--cells", "batch_size": "--batch-size",
                   "search_images": "--search-images"}


def canonical_space(name: str) -> str:
    space = SEARCH_SPACES.get(str(name).strip().lower())
    if space is None:
        raise UserError(f"unknown search space {name!r}; known: nb201, darts")
    return space


@dataclass
class SearchConfig:
    """Everything a one-shot search depends on (recorded in result.json's ``config``).

    Attributes:
        optimizer: registry name (``bayesnas``, ``darts``, ``random-cell``).
        search_space: ``nb201`` or ``darts``.
        dataset: ``digits``, ``mnist``, ``cifar10``, ``cifar100``, ``ImageNet16-120``.
        data_root: folder of the dataset's files (digits needs none).
        seed: search seed. data_seed: seed of the dataset split.
        channels, cells: supernet size (None: :data:`DEFAULT_SIZES`).
        batch_size: images per step (DARTS: per half).
        search_images: use only this many search images (a seeded subset; None: all).
        augment: apply the dataset's usual training augmentation (crop/flip) to search batches.
        checkpoint_every: also checkpoint every K steps (0: at epoch ends only).
        device: torch device.
        hyperparameters: the optimizer's hyper-parameters (lambda_origin, warmup_epochs, ...).
    """

    optimizer: str
    search_space: str = "nb201"
    dataset: str = "digits"
    data_root: str | None = None
    seed: int = 0
    data_seed: int = 0
    channels: int | None = None
    cells: int | None = None
    batch_size: int = 64
    search_images: int | None = None
    augment: bool = True
    checkpoint_every: int = 0
    device: str = "cpu"
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        whole_numbers(self, ("seed", "data_seed", "channels", "cells", "batch_size", "search_images",
                             "checkpoint_every"))


class SearchData(NamedTuple):
    """The search images and labels, the dataset's description and training split, and when their
    loading began (``time.perf_counter()``: a search counts it in its wall time)."""

    images: torch.Tensor
    labels: torch.Tensor
    description: dict[str, Any]
    train: Any
    load_started: float


def load_search_data(cfg: SearchConfig) -> SearchData:
    """The search images (a command loads them before it makes its folder: data it cannot read, or
    too few images for ``search_images``, is refused without leaving one)."""
    from naslib_bayes.data import load_dataset

    load_started = time.perf_counter()
    splits = load_dataset(cfg.dataset, cfg.data_root, seed=cfg.data_seed)
    train = splits.train
    images, labels = train.images, train.labels
    if cfg.search_images is not None:
        if cfg.search_images > len(labels):  # a subset cannot be larger; taking them all would say otherwise
            raise UserError(f"--search-images {cfg.search_images}: {cfg.dataset} has only {len(labels)} search "
                            "images (its training split)")
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.data_seed))[: cfg.search_images]
        images, labels = images[keep], labels[keep]
    return SearchData(images, labels, splits.describe(), train, load_started)


def check_search_config(cfg: SearchConfig) -> None:
    """Refuse the settings that are wrong whatever the data holds (search space, optimizer and its
    hyper-parameters, dataset name, a missing data folder, fewer than 2 search images), so that a
    command refuses them before it makes its output folder."""
    from naslib_bayes.data.loaders import canonical_name, require_root

    canonical_space(cfg.search_space)
    for name in ("channels", "cells", "batch_size"):  # channels=0 would fall back to the default size
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise UserError(f"{OPTION_OF_FIELD[name]} {value}: expected a positive integer")
    if cfg.checkpoint_every < 0:
        raise UserError(f"checkpoint_every {cfg.checkpoint_every}: expected 0 (epochs only) or a positive integer")
    registry.get_spec(cfg.optimizer, kind=registry.ONE_SHOT).load()(seed=cfg.seed, **cfg.hyperparameters)
    require_root(canonical_name(cfg.dataset), cfg.data_root)
    if cfg.search_images is not None and cfg.search_images < 2:
        raise UserError("--search-images must be at least 2")


def build_supernet(space: str, channels: int, cells: int, num_classes: int, in_channels: int, seed: int):
    """The supernet, initialised from ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if space == "nasbench201":
            from naslib_bayes.search_spaces.nasbench201.supernet import NB201SuperNet

            return NB201SuperNet(channels, cells, num_classes, in_channels)
        from naslib_bayes.search_spaces.darts.search_network import DartsSearchNetwork

        return DartsSearchNetwork(channels, num_classes, layers=cells, in_channels=in_channels)


def run_settings(cfg: SearchConfig, space: str, channels: int, cells: int, dataset: str,
                 optimizer_config: dict[str, Any], scored_by: str | None = None) -> dict[str, Any]:
    """What defines a search, keyed by the option that sets it: a checkpoint resumes only the same.

    Every :class:`SearchConfig` field but :data:`NOT_OF_THE_RUN`, with the values the search
    resolved (canonical space and dataset names, the supernet's size after its defaults); the
    optimizer's hyper-parameters, its defaults included, one key each (``--opt lambda_origin``);
    the contents of the data files and torch's thread count
    (:func:`~naslib_bayes.training.checkpoint.environment_settings`);
    ``--report-metric``, the metric the derived cell is scored by on a benchmark, if it is (the
    benchmark's path is not kept: the file may move, as the data may).
    """
    resolved = {**asdict(cfg), "search_space": space, "channels": channels, "cells": cells, "dataset": dataset}
    settings = {OPTION_OF_FIELD.get(name, name): value for name, value in resolved.items()
                if name not in (*NOT_OF_THE_RUN, "hyperparameters", "augment")}
    settings["--no-augment"] = not cfg.augment
    settings.update(ckpt.environment_settings(cfg.dataset, cfg.data_root))
    settings.update({f"--opt {name}": value for name, value in optimizer_config.items()})
    if scored_by is not None:  # absent otherwise, as in checkpoints written before runs recorded it
        settings[SCORED_BY] = scored_by
    return settings


@dataclass
class PreparedSearch:
    """A one-shot search ready to run: the settings it resolved and the objects that run it."""

    space: str
    channels: int
    cells: int
    description: dict[str, Any]
    search_images: int
    optimizer: Any
    augment: Any
    trainer: Any


def supernet_size(cfg: SearchConfig, space: str) -> tuple[int, int]:
    """(channels, cells) of the supernet: the configured ones, else :data:`DEFAULT_SIZES`."""
    return (cfg.channels or DEFAULT_SIZES[space][0]), (cfg.cells or DEFAULT_SIZES[space][1])


def build_search_optimizer(spec: registry.OptimizerSpec, cfg: SearchConfig, net, dataset: str, device):
    """The one-shot optimizer, seeded, adapted to the supernet and moved to ``device``."""
    opt = spec.load()(seed=cfg.seed, **cfg.hyperparameters)
    opt.adapt_search_space(net, dataset=dataset)
    opt.model.to(device)
    return opt


def search_augmentation(cfg: SearchConfig, dataset: str, train):
    """The dataset's training augmentation for search batches; None when off or when it changes nothing."""
    from naslib_bayes.data import default_augment

    augment = default_augment(dataset, train) if cfg.augment else None
    if augment is not None and augment.is_identity:
        augment = None
    return augment


def prepare_search(cfg: SearchConfig, out_dir: str | Path | None, progress: Callable[[int, int, int], None] | None,
                   stop_after_steps: int | None, scored_by: str | None = None,
                   data: SearchData | None = None) -> PreparedSearch:
    """Supernet, optimizer, augmentation and trainer of one search on ``data`` (loaded here when
    None); nothing trained yet."""
    from naslib_bayes.training.oneshot import OneShotTrainer

    space = canonical_space(cfg.search_space)
    spec = registry.get_spec(cfg.optimizer, kind=registry.ONE_SHOT)
    channels, cells = supernet_size(cfg, space)
    images, labels, description, train, _ = data or load_search_data(cfg)
    dataset = description["dataset"]
    device = torch.device(cfg.device)
    images, labels = images.to(device), labels.to(device)
    net = build_supernet(space, channels, cells, train.num_classes, images.shape[1], cfg.seed).to(device)
    opt = build_search_optimizer(spec, cfg, net, dataset, device)
    augment = search_augmentation(cfg, dataset, train)
    run = run_settings(cfg, space, channels, cells, dataset, opt.config, scored_by)
    trainer = OneShotTrainer(opt, images, labels, cfg.batch_size, seed=cfg.seed, out_dir=out_dir,
                             checkpoint_every=cfg.checkpoint_every, augment=augment, progress=progress,
                             stop_after_steps=stop_after_steps, run=run)
    return PreparedSearch(space, channels, cells, description, int(labels.shape[0]), opt, augment, trainer)


def result_config(cfg: SearchConfig, search: PreparedSearch) -> dict[str, Any]:
    """result.json's ``config``: the search's settings as resolved, its optimizer's, schedule and split."""
    opt = search.optimizer
    return {
        **{k: v for k, v in asdict(cfg).items() if k != "hyperparameters"},
        "search_space": search.space, "channels": search.channels, "cells": search.cells,
        "optimizer_config": dict(opt.config),
        "lr_schedule": f"SGD momentum {opt.config['momentum']}, lr {opt.config['lr']} cosine-annealed per epoch "
                       f"to {opt.config['lr_min']} over {opt.total_epochs} epochs",
        "augmentation": None if search.augment is None else asdict(search.augment),
        "total_epochs": opt.total_epochs,
        "steps_per_epoch": search.trainer.steps_per_epoch,
        "search_split": search_split(opt),
    }


def search_split(opt) -> str:
    """What the search images train: halves for weights and architecture (DARTS), else all of them."""
    if opt.uses_validation_split:
        return "50/50 weights/architecture"
    trains_switches = bool(getattr(opt, "architectural_weights", None))  # random-cell has none
    return "all images train weights and switches" if trains_switches else "all images train the weights"


def architecture_fields(space: str, arch) -> dict[str, Any]:
    """result.json's fields describing the derived architecture (an NB201 cell or a DARTS genotype)."""
    if space == "nasbench201":
        return {"final_architecture": nb201.to_string(arch), "final_architecture_op_indices": list(arch),
                "parameter_free": nb201.is_parameter_free(arch), "op_counts": nb201.op_counts(arch)}
    return {"final_architecture": arch.to_json(), "parameter_free": arch.parameter_free(),
            "op_counts": arch.op_counts()}


def score_on_benchmark(result: dict[str, Any], arch, benchmark: Benchmark, report_metric: str) -> None:
    """Add the derived NB201 cell's ``report_metric`` on every benchmark dataset that has it to ``result``."""
    result["report_metric"] = report_metric
    result["benchmark_accuracy"] = benchmark.query_everywhere(arch, report_metric)
    result["config"]["benchmark"] = benchmark.source
    result["notes"] += [f"derived cell scored by {benchmark.source}; the search never saw that data"]


def search_result(cfg: SearchConfig, search: PreparedSearch, state, start: float, benchmark: Benchmark | None,
                  report_metric: str) -> dict[str, Any]:
    """result.json of a finished search (``state``: the trainer's), its wall time counted from ``start``."""
    opt = search.optimizer
    arch = opt.get_final_architecture()
    extras = opt.result_extras()
    update_times = [u.pop("time_s") for u in extras.get("architecture_updates", [])]
    config = result_config(cfg, search)
    result = results.new_result(
        "search",
        torch_threads=results.torch_threads(),
        optimizer=cfg.optimizer,
        search_space=search.space,
        dataset=search.description["dataset"],
        seed=cfg.seed,
        wall_time_s=time.perf_counter() - start + search.trainer.earlier_wall_s,  # resumed: the earlier processes too
        config=config,
        notes=[],
        epoch_times_s=list(state.epoch_times),
        epoch_cpu_times_s=list(state.epoch_cpu_times),
        epoch_stats=[{k: v for k, v in s.items() if k != "time_s"} for s in state.stats],
        search_data={**search.description, "search_images": search.search_images},
        model_size_mb=opt.get_model_size(),
        **extras,
    )
    if update_times:
        result["architecture_update_times_s"] = update_times
    result.update(architecture_fields(search.space, arch))
    if search.space == "nasbench201" and benchmark is not None:
        score_on_benchmark(result, arch, benchmark, report_metric)
    return result


def run_oneshot_search(
    cfg: SearchConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    benchmark: Benchmark | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    stop_after_steps: int | None = None,
    report_metric: str = "test_accuracy",
    data: SearchData | None = None,
) -> dict[str, Any]:
    """Run one search and return its result (schema ``result.json``).

    ``resume`` continues the run checkpointed in ``out_dir``, if there is a checkpoint; one of
    another kind or of a run with other settings (:func:`run_settings`, whether and by which
    metric the cell is scored included) is a :class:`UserError`.

    With a ``benchmark`` the derived NAS-Bench-201 cell is scored by its ``report_metric`` on
    every dataset that has it.

    ``data``: the search images of ``cfg``, loaded already by :func:`load_search_data` (as a
    command does before it makes ``out_dir``); their loading counts in the wall time.
    """
    start = time.perf_counter() if data is None else data.load_started
    check_search_config(cfg)
    scored_by = report_metric if benchmark is not None else None
    search = prepare_search(cfg, out_dir, progress, stop_after_steps, scored_by, data)
    state = search.trainer.search(resume=resume)
    return search_result(cfg, search, state, start, benchmark, report_metric)


def strip_timings(result: dict[str, Any]) -> dict[str, Any]:
    """A copy without the timing fields (what a resumed run must reproduce exactly)."""
    return {k: v for k, v in result.items() if k not in TIMING_KEYS}
