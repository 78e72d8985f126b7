"""Meta-training of the TNAS surrogate on evaluations from other datasets.

A *task* is a random subset of 20 to 100 cells of one meta-training dataset with their
accuracies in GP units computed from that dataset's own statistics over its training cells:
``copula`` (default) maps an accuracy to the normal quantile of its rank, ``standardise``
subtracts the mean and divides by the standard deviation, ``robust`` subtracts the median,
divides by the normal-consistent interquartile range and clips the low tail at
``ROBUST_CLIP`` (see :func:`robust_standardise`). The rank-based form keeps the few
degenerate cells (1-10% accuracy, 4-5 standard deviations below the rest) from dominating the
marginal likelihood; with plain standardisation the validation NLL of meta-training stalls near
the level of predicting the mean. ``robust`` keeps them from dominating too (they sit at the
clip), while the top of a dataset keeps spacing proportional to accuracy, which ranks lose: a
cell 0.5 pp below a dataset's best can be 100 ranks below it. The loss of a task is the GP's negative log marginal likelihood, which trains psi, xi,
the GP hyper-parameters and (``learned`` mode) the dataset contexts together.

Outer updates:

* ``reptile`` (the paper): from the current weights theta, ``inner_steps`` Adam steps on one
  task give theta'; then ``theta <- theta + outer_step * (theta' - theta)``.
* ``joint`` (the public code, default): one Adam step per batch of ``tasks_per_step`` tasks
  on the shared weights.

Each meta-training dataset keeps ``holdout_fraction`` of its cells out of training, drawn per
dataset; fixed validation tasks condition the GP on training cells and score the held-out ones
(predictive negative log likelihood, GP units). Most cells held out on one dataset are trained
on through another's value: that is the target's situation in BO (every cell known from the
sources, its value on the new dataset unseen), so the validation measures the transfer the
surrogate is for. One set of held-out cells shared by the datasets would validate unseen cells
instead; measured, it searched worse (docs/tnas.md, "The held-out split"). Training stops when
that loss has not improved for ``patience`` evaluations, and the best weights are kept.
ReduceLROnPlateau lowers the inner learning rate on the same signal. The target dataset is
never seen.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import require_choice, whole_number
from naslib_bayes.predictors.surrogate import OUTPUT_TRANSFORMS, Evidence, SurrogateConfig, TNASSurrogate, cell_index
from naslib_bayes.search_spaces.nasbench201.benchmark import finite_or_none
from naslib_bayes.threads import torch_threads
from naslib_bayes.training.divergence import diverged

logger = logging.getLogger(__name__)


@dataclass
class MetaDataset:
    """Evaluations of one meta-training dataset.

    Attributes:
        name: dataset name.
        cells: (n, 6) op-index tuples.
        values: (n,) accuracies (percent), finite.
        images: ``images`` mode only: a callable ``generator -> (n_classes, per_class, ...)``
            images sampled per class (a fresh sample for each task).
        metric: the benchmark metric ``values`` hold (None: not read from a benchmark).
    """

    name: str
    cells: np.ndarray
    values: np.ndarray
    images: Callable[[torch.Generator], torch.Tensor] | None = None
    metric: str | None = None


@dataclass
class MetaTrainConfig:
    """Hyper-parameters of meta-training (plain values: they are stored with the surrogate).

    Attributes:
        outer: ``joint`` or ``reptile``.
        iterations: maximum number of outer iterations.
        lr: Adam learning rate of the inner optimiser (halved on plateaus). The paper's 0.1
            leaves psi and xi at the no-information solution here (validation NLL flat at the
            level of predicting the mean); 0.01 learns.
        inner_steps: ``reptile``: Adam steps per task.
        outer_step: ``reptile``: the fraction of the way theta moves towards theta'.
        task_size: inclusive range of cells per task.
        holdout_fraction: share of each dataset's cells held out for early stopping.
        eval_every: outer iterations between validations.
        patience: validations without improvement before stopping.
        lr_patience: validations without improvement before the learning rate is halved.
        val_tasks: validation tasks per dataset.
        val_support: training cells each validation task conditions on.
        val_query: held-out cells each validation task scores.
        threads: torch intra-op threads while training.
        tasks_per_step: ``joint``: tasks whose mean loss makes one Adam step (one encoder call
            for all their cells, which is where the time goes).
        clip_norm: gradient-norm clipping of each Adam step.
        output_transform: ``standardise`` (mean and standard deviation of the dataset's
            training cells), ``copula`` (normal quantile of the cell's rank among them) or
            ``robust`` (median and interquartile range of them, low tail clipped).
        evidence_top: best training cells of each dataset kept as evidence (see below). 1000
            (6.4% of NB201's cells): with surrogates meta-trained on one dataset searching
            another, it lowered the regret after 10 queries against 200 on both selections
            that decide; 50 lowered it on one and raised it on the other (docs/tnas.md,
            "How much evidence").
        evidence_random: further random training cells of each dataset kept as evidence.

    The evidence is what the surrogate conditions on to predict a new dataset before any of its
    cells is evaluated (the initial design): the best cells pin down the region that matters,
    the random ones the rest of the space.
    """

    outer: str = "joint"
    iterations: int = 800
    lr: float = 0.01
    inner_steps: int = 5
    outer_step: float = 0.1
    task_size: tuple[int, int] = (20, 100)
    holdout_fraction: float = 0.1
    eval_every: int = 50
    patience: int = 6
    lr_patience: int = 2
    val_tasks: int = 4
    val_support: int = 50
    val_query: int = 100
    threads: int = 1
    evidence_top: int = 1000
    tasks_per_step: int = 2
    clip_norm: float = 1.0
    output_transform: str = "copula"
    evidence_random: int = 500

    def __post_init__(self):
        require_choice("output_transform", self.output_transform, OUTPUT_TRANSFORMS)
        require_choice("outer", self.outer, OUTER_UPDATES)
        self.task_size = tuple(int(s) for s in self.task_size)
        self._check_step_settings()
        if not 2 <= self.task_size[0] <= self.task_size[1]:
            raise UserError(f"task size range {self.task_size} must satisfy 2 <= low <= high")

    def _check_step_settings(self) -> None:
        """Adam raises on a negative rate only once training has started; no steps or a zero rate
        would train nothing, a negative REPTILE step away from the tasks, without a word."""
        if not self.lr > 0:
            raise UserError(f"meta-training setting lr={self.lr!r}: expected a number > 0")
        if not self.outer_step >= 0:
            raise UserError(f"meta-training setting outer_step={self.outer_step!r}: expected a number >= 0")
        for name in ("iterations", "inner_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"meta-training setting {name}={getattr(self, name)!r}: expected an integer >= 1")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["task_size"] = list(self.task_size)
        return out


MIN_IMPROVEMENT = 1e-4  # a validation loss lower than the best by less is no improvement
ROBUST_CLIP = -3.0  # ``robust``: the low tail is clipped this many scales below the median
OUTER_UPDATES = ("reptile", "joint")
IQR_TO_STD = 1.349  # interquartile range of a standard normal


@dataclass
class _Split:
    """One dataset's training and held-out cells, and the statistics that put its values in GP units.

    ``mean`` and ``std`` are those of the training cells' values (``standardise``); the other
    transforms take their statistics from the training cells' values directly.
    """

    index: int
    data: MetaDataset
    train: np.ndarray  # positions into data.cells
    held_out: np.ndarray
    mean: float
    std: float
    transform: str = "standardise"

    def in_gp_units(self, positions: np.ndarray) -> torch.Tensor:
        """Values of the cells at ``positions`` (k,) in the units the GP sees, (k,) float64, by
        ``transform`` with this dataset's training-cell statistics (see
        ``MetaTrainConfig.output_transform``): the copula and the robust map as well as
        standardisation."""
        values = self.data.values[positions]
        if self.transform in REFERENCE_TRANSFORMS:
            transform = REFERENCE_TRANSFORMS[self.transform]
            return torch.as_tensor(transform(values, self.data.values[self.train]), dtype=torch.float64)
        return torch.as_tensor((values - self.mean) / self.std, dtype=torch.float64)

    def cells(self, positions: np.ndarray) -> list[tuple[int, ...]]:
        return [tuple(int(op) for op in c) for c in self.data.cells[positions]]


@dataclass
class MetaTrainLog:
    """What meta-training did, for result.json."""

    iterations: int = 0
    stopped_early: bool = False
    best_iteration: int = 0
    best_val_loss: float = math.inf
    wall_time_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    datasets: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_train(datasets: Sequence[MetaDataset], surrogate_config: SurrogateConfig, config: MetaTrainConfig,
               seed: int, progress: Callable[[int, float], None] | None = None) -> tuple[TNASSurrogate, MetaTrainLog]:
    """Meta-train a fresh surrogate on ``datasets``; returns it (best validation weights) and a log.

    ``seed`` drives the initial weights, the train/held-out split, task sampling and image
    sampling, through local generators only.
    """
    if not datasets:
        raise UserError("meta-training needs at least one dataset")
    seed = whole_number("seed", seed)  # torch.Generator.manual_seed takes a Python int only, not numpy's
    start = time.perf_counter()
    with torch_threads(config.threads):
        np_rng = np.random.default_rng(seed)
        torch_gen = torch.Generator().manual_seed(seed)
        surrogate_config = dataclasses.replace(surrogate_config, meta_datasets=tuple(d.name for d in datasets),
                                               output_transform=config.output_transform)
        surrogate = TNASSurrogate(surrogate_config, generator=torch_gen)
        splits = [_split(i, d, config.holdout_fraction, config.output_transform, np_rng) for i, d in enumerate(datasets)]
        validation = _validation_tasks(splits, config, np_rng)
        log = MetaTrainLog(datasets={s.data.name: {"mean": s.mean, "std": s.std, "train_cells": len(s.train),
                                                   "held_out_cells": len(s.held_out)} for s in splits})
        _train_loop(surrogate, splits, validation, config, np_rng, torch_gen, log, progress)
        surrogate.set_evidence(_select_evidence(splits, config, np_rng), _meta_phi(surrogate, splits, torch_gen))
    log.wall_time_s = time.perf_counter() - start
    return surrogate, log


MIN_EVALUATED_CELLS = 10


def evaluated_cells(data: MetaDataset) -> np.ndarray:
    """Positions of ``data``'s cells with a value; a :class:`UserError` when there are too few to
    split into training and held-out cells (a command asks before it writes)."""
    finite = np.flatnonzero(np.isfinite(data.values))
    if finite.size < MIN_EVALUATED_CELLS:
        raise UserError(f"meta-training dataset {data.name!r} has only {finite.size} evaluated cells")
    return finite


def _split(index: int, data: MetaDataset, holdout_fraction: float, transform: str,
           rng: np.random.Generator) -> _Split:
    finite = evaluated_cells(data)
    order = rng.permutation(finite)
    n_out = max(1, int(round(holdout_fraction * finite.size)))
    train, held_out = np.sort(order[n_out:]), np.sort(order[:n_out])
    values = data.values[train]
    return _Split(index, data, train, held_out, float(values.mean()), float(values.std()) or 1.0, transform)


def _select_evidence(splits: Sequence[_Split], config: MetaTrainConfig, rng) -> Evidence:
    """The best and some random training cells of each dataset, each with every dataset's value.

    Each dataset chooses its ``evidence_top`` best and ``evidence_random`` random training cells;
    every chosen cell then enters with its value on *every* meta-training dataset that has it
    among its training cells, not only on the dataset that chose it. Otherwise a cell among one
    dataset's best but not drawn by another would be seen with its high value alone, and the
    prior (which, without a dataset context, averages a cell's values over the datasets) would
    rank cells good on one dataset above cells good on all: a selection on the values themselves.
    """
    chosen_keys = []
    for split in splits:
        ranked = split.train[np.argsort(-split.data.values[split.train], kind="stable")]
        top = ranked[: config.evidence_top]
        rest = ranked[config.evidence_top :]
        extra = rng.choice(rest, size=min(config.evidence_random, len(rest)), replace=False)
        chosen_keys.append(cell_index(torch.as_tensor(split.data.cells[np.concatenate([top, extra])], dtype=torch.long)))
    chosen = torch.unique(torch.cat(chosen_keys))
    cells, values, owner = [], [], []
    for split in splits:
        train_keys = cell_index(torch.as_tensor(split.data.cells[split.train], dtype=torch.long))
        rows = split.train[torch.isin(train_keys, chosen).numpy()]
        cells.append(torch.as_tensor(split.data.cells[rows], dtype=torch.long))
        values.append(split.in_gp_units(rows))
        owner.append(torch.full((len(rows),), split.index, dtype=torch.long))
    return Evidence(torch.cat(cells), torch.cat(values), torch.cat(owner))


@torch.no_grad()
def _meta_phi(surrogate: TNASSurrogate, splits, torch_gen, samples: int = 4) -> torch.Tensor | None:
    """``images`` mode: each meta dataset's phi, averaged over a few image samples."""
    if surrogate.config.dataset_encoder != "images":
        return None
    return torch.stack([torch.stack([_context(surrogate, split, torch_gen) for _ in range(samples)]).mean(0)
                        for split in splits])


def _sample_task(split: _Split, config: MetaTrainConfig, rng: np.random.Generator) -> np.ndarray:
    low, high = config.task_size
    size = int(rng.integers(low, high + 1))
    return rng.choice(split.train, size=min(size, len(split.train)), replace=False)


def _validation_tasks(splits, config: MetaTrainConfig, rng) -> list[tuple[_Split, np.ndarray, np.ndarray]]:
    tasks = []
    for split in splits:
        for _ in range(config.val_tasks):
            support = rng.choice(split.train, size=min(config.val_support, len(split.train)), replace=False)
            query = rng.choice(split.held_out, size=min(config.val_query, len(split.held_out)), replace=False)
            tasks.append((split, support, query))
    return tasks


def _context(surrogate: TNASSurrogate, split: _Split, torch_gen: torch.Generator) -> torch.Tensor | None:
    """The dataset context of a task, (context_dim,): learned row, freshly sampled images, or none."""
    mode = surrogate.config.dataset_encoder
    if mode == "learned":
        return surrogate.meta_context(split.index)
    if mode == "images":
        from naslib_bayes.predictors.dataset_context import image_context

        return image_context(surrogate, split.data.images(torch_gen))
    return None


def batch_loss(surrogate: TNASSurrogate, tasks, torch_gen) -> torch.Tensor:
    """Mean over tasks of the negative log marginal likelihood per cell, a scalar with gradient.

    ``tasks`` are ``(split, positions)`` pairs, ``positions`` (k,) the task's cells in that split.

    The cells of all tasks go through psi in one batch: the encoder's cost is mostly per call,
    not per cell, at task sizes.
    """
    cells = [c for split, positions in tasks for c in split.cells(positions)]
    encodings = surrogate.encode(cells)
    losses, start = [], 0
    for split, positions in tasks:
        block = encodings[start : start + len(positions)]
        start += len(positions)
        x = surrogate.kernel_inputs(block, _context(surrogate, split, torch_gen))
        losses.append(surrogate.gp.neg_mll(x, split.in_gp_units(positions)))
    return torch.stack(losses).mean()


@torch.no_grad()
def validation_loss(surrogate: TNASSurrogate, tasks, torch_gen) -> float:
    """Mean predictive negative log likelihood of held-out cells given training cells.

    ``tasks`` are ``(split, support, query)``: ``support`` (s,) training cells the GP conditions
    on, ``query`` (q,) held-out cells it scores, both positions in that split.
    """
    losses = []
    for split, support, query in tasks:
        context = _context(surrogate, split, torch_gen)
        xs = surrogate.kernel_inputs(surrogate.encode(split.cells(support)), context)
        xq = surrogate.kernel_inputs(surrogate.encode(split.cells(query)), context)
        surrogate.gp.condition_on(xs, split.in_gp_units(support))
        mean, std = surrogate.gp.posterior(xq)
        var = std**2 + surrogate.gp.likelihood.noise.detach()
        y = split.in_gp_units(query)
        losses.append(float((0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mean) ** 2 / var).mean()))
    return float(np.mean(losses))


def _train_loop(surrogate, splits, validation, config: MetaTrainConfig, rng, torch_gen, log: MetaTrainLog, progress):
    """Outer iterations until ``config.iterations`` or early stopping; leaves the surrogate at the
    weights with the best validation loss and records the run in ``log``."""
    params = [p for p in surrogate.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    # an absolute threshold, as early stopping's: torch's default, relative to the best loss, takes
    # a slightly worse loss for an improvement once the (negative log likelihood) loss is negative
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=config.lr_patience,
                                                           threshold=MIN_IMPROVEMENT, threshold_mode="abs")
    best_state = copy.deepcopy(surrogate.state_dict())
    log.best_val_loss = validation_loss(surrogate, validation, torch_gen)
    stale, stepped = 0, False
    for iteration in range(1, config.iterations + 1):
        train_loss = _without_breakdown(iteration, optimizer,
                                        lambda: _outer_update(surrogate, optimizer, splits, config, rng, torch_gen))
        stepped = stepped or math.isfinite(train_loss)  # a NaN step is skipped: one broken-down task
        log.iterations = iteration
        # the last iteration is always validated: its weights must be able to win
        if iteration % config.eval_every and iteration != config.iterations:
            continue
        if not stepped:  # every step since the last validation skipped: the weights no longer train
            raise _meta_training_diverged(f"training loss {train_loss}", iteration, optimizer.param_groups[0]["lr"])
        val = _without_breakdown(iteration, optimizer, lambda: validation_loss(surrogate, validation, torch_gen))
        if not math.isfinite(val):
            raise _meta_training_diverged(f"validation loss {val}", iteration, optimizer.param_groups[0]["lr"])
        stepped = False
        scheduler.step(val)
        _record_validation(log, iteration, train_loss, val, optimizer.param_groups[0]["lr"])
        if progress is not None:
            progress(iteration, val)
        if val < log.best_val_loss - MIN_IMPROVEMENT:
            log.best_val_loss, log.best_iteration, stale = val, iteration, 0
            best_state = copy.deepcopy(surrogate.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                log.stopped_early = True
                break
    surrogate.load_state_dict(best_state)


def _without_breakdown(iteration: int, optimizer, compute: Callable[[], float]) -> float:
    """``compute()``, a loss of ``iteration``; a kernel matrix that broke down (weights blown up)
    is a UserError naming the iteration and the learning rate instead of a LinAlgError traceback.

    The other signs of divergence are the caller's to read: a NaN validation loss (it was never
    an improvement, so training ran on to its patience and returned the last good weights without
    a word) and training steps that are all skipped as NaN.
    """
    try:
        return compute()
    except torch.linalg.LinAlgError as exc:
        raise _meta_training_diverged(str(exc), iteration, optimizer.param_groups[0]["lr"]) from None


def _meta_training_diverged(sign: str, iteration: int, lr: float) -> UserError:
    return diverged("meta-training", sign, f"iteration {iteration}", lr, "meta-train --lr, or TNAS's meta_lr")


def _outer_update(surrogate, optimizer, splits, config: MetaTrainConfig, rng, torch_gen) -> float:
    """One outer iteration on freshly drawn tasks (``joint``: one Adam step on ``tasks_per_step``
    tasks; ``reptile``: one REPTILE step on one task); returns its training loss."""
    if config.outer == "joint":
        batch = [_random_task(splits, config, rng) for _ in range(config.tasks_per_step)]
        return _adam_steps(surrogate, optimizer, batch, 1, torch_gen, config.clip_norm)
    return _reptile_step(surrogate, optimizer, [_random_task(splits, config, rng)], config, torch_gen)


def _record_validation(log: MetaTrainLog, iteration: int, train_loss: float, val_loss: float, lr: float) -> None:
    """Append one validation's entry to ``log.history``."""
    # a step skipped as NaN (a broken-down task) has no loss: None, as result.json allows no NaN
    log.history.append({"iteration": iteration, "train_loss": finite_or_none(train_loss), "val_loss": val_loss,
                        "lr": lr})


def _random_task(splits, config: MetaTrainConfig, rng) -> tuple[_Split, np.ndarray]:
    split = splits[int(rng.integers(len(splits)))]
    return split, _sample_task(split, config, rng)


def _adam_steps(surrogate, optimizer, tasks, steps: int, torch_gen, clip_norm: float) -> float:
    """``steps`` Adam steps on the mean loss of ``tasks`` ([(split, positions)])."""
    loss = torch.zeros(())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for _ in range(steps):
        optimizer.zero_grad()
        loss = batch_loss(surrogate, tasks, torch_gen)
        if not torch.isfinite(loss):  # a task whose kernel matrix broke down: no step on it
            continue
        loss.backward()
        # Clipping keeps one badly conditioned task from throwing the encoder off for good
        # (without it, runs at this learning rate occasionally collapse to a flat kernel).
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()
    return float(loss.detach())


def _reptile_step(surrogate, optimizer, tasks, config: MetaTrainConfig, torch_gen) -> float:
    """theta <- theta + outer_step * (theta' - theta), theta' after ``inner_steps`` Adam steps.

    The Adam moments persist across tasks (as in REPTILE's reference implementation), which
    keeps the inner steps' scale stable from one task to the next.
    """
    before = [p.detach().clone() for p in surrogate.parameters()]
    loss = _adam_steps(surrogate, optimizer, tasks, config.inner_steps, torch_gen, config.clip_norm)
    with torch.no_grad():
        for p, p0 in zip(surrogate.parameters(), before):
            p.copy_(p0 + config.outer_step * (p - p0))
    return loss


def robust_standardise(values: np.ndarray, reference: np.ndarray, clip: float | None = None) -> np.ndarray:
    """``(v - median) / scale`` with the statistics of ``reference``, clipped below at ``clip``.

    ``scale`` is the interquartile range of ``reference`` divided by 1.349 (the standard deviation
    of a normal sample with that range); where that is zero, the standard deviation; where that is
    zero too, 1. ``clip`` defaults to ``ROBUST_CLIP``: values further below the median than that
    many scales (degenerate cells) all map to it, so they cannot dominate the marginal
    likelihood. Above the clip the map is affine, so order and accuracy ratios are kept.
    """
    clip = ROBUST_CLIP if clip is None else float(clip)
    reference = np.asarray(reference, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.percentile(reference, [25, 50, 75])
    scale = (q3 - q1) / IQR_TO_STD
    tied = 1e-12 * float(np.abs(reference).max())  # relative: the values' units are the user's
    if not scale > tied:
        scale = float(reference.std())
    if not scale > tied:
        scale = 1.0
    return np.maximum((values - median) / scale, clip)


def copula(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Normal quantile of each value's mid-rank among ``reference`` (ties share a rank)."""
    from scipy.stats import norm

    reference = np.sort(reference)
    below = np.searchsorted(reference, values, side="left")
    not_above = np.searchsorted(reference, values, side="right")
    return norm.ppf((0.5 * (below + not_above) + 0.5) / (len(reference) + 1))


#: The output transforms that map ``(values, reference)`` to GP units with the statistics of
#: ``reference`` (meta-training: a dataset's training cells; BO: the target's observations);
#: ``standardise`` is the third, done from a stored or observed mean and standard deviation.
REFERENCE_TRANSFORMS = {"copula": copula, "robust": robust_standardise}


def meta_datasets_from_benchmark(benchmark, datasets: Sequence[str], metric: str = "test_accuracy",
                                 dataset_encoder: str = "off", image_root=None, per_class: int = 20,
                                 max_classes: int | None = 20) -> list[MetaDataset]:
    """:class:`MetaDataset` s for ``datasets`` of a benchmark (``images`` mode: with image samplers).

    ``per_class`` and ``max_classes`` size the image samples; pass the surrogate config's
    ``images_per_class`` and ``max_classes``, which size the target's samples in the search.
    """
    from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset

    out = []
    for name in datasets:
        name = canonical_dataset(name)
        if not benchmark.has_metric(name, metric):
            metric_used = "test_accuracy"
            logger.warning("%s has no %s for %s: meta-training on %s", benchmark.source, metric, name, metric_used)
        else:
            metric_used = metric
        images = None
        if dataset_encoder == "images":
            from naslib_bayes.predictors.dataset_context import image_sampler

            images = image_sampler(name, image_root, per_class, max_classes)
        out.append(MetaDataset(name, np.asarray(benchmark.cells), np.asarray(benchmark.query_all(name, metric_used)), images,
                               metric_used))
    return out


def learned_from(datasets: Sequence[MetaDataset]) -> dict[str, str | None]:
    """The metric each meta-training dataset's values are, by dataset: one lacking the metric asked
    for is learned from its test accuracy, which a record must say, not only a log line."""
    return {dataset.name: dataset.metric for dataset in datasets}
