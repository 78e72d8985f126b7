"""The one-shot search loop: drives an optimizer's ``step`` as NASLib's Trainer does.

Per epoch: ``optimizer.new_epoch(e)``; one ``optimizer.step(data_train, data_val)`` per
batch; ``optimizer.end_epoch(e)`` (BayesNAS's architecture update, timed as part of the
epoch); then the cosine learning-rate scheduler of ``optimizer.op_optimizer`` steps, like
NASLib's (``T_max`` = total epochs, ``eta_min`` = the optimizer's ``lr_min``).

Data: methods that train architecture parameters on held-out batches
(``optimizer.uses_validation_split``, DARTS) get the search images split 50/50 by a seeded
permutation, weights on one half and architecture on the other; the others get every search
image as training data and ``data_val=None``. Batch order and augmentation are pure
functions of ``(seed, epoch, step)``, so an epoch can be resumed at any step.

Each epoch's wall time and CPU time of this process (``time.process_time``: less sensitive to
other processes on a shared machine) are recorded.

Checkpoints (atomic, ``DIR/checkpoint.pt``) are written at the end of every epoch and every
``checkpoint_every`` steps; they hold the model, the optimizers, the scheduler, the
optimizer's own state and the loop position, so ``search(resume=True)`` continues a killed run
and ends with the same architecture and statistics as an uninterrupted run. They also hold the
settings of the run (``run``): a checkpoint of another kind, or of a run with other settings, is
refused before anything is restored.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from naslib_bayes.training import checkpoint as ckpt
from naslib_bayes.training.divergence import require_finite_loss

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
FORMAT = "naslib-bayes one-shot search"


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    time_s: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SearchState:
    """Position of the loop and what it measured so far (saved in checkpoints)."""

    epoch: int = 0
    step: int = 0
    epoch_times: list[float] = field(default_factory=list)
    epoch_cpu_times: list[float] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)
    elapsed_in_epoch: float = 0.0
    cpu_in_epoch: float = 0.0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # loss, correct, n, vloss, vcorrect, vn
    wall_s_before: float = 0.0  # wall time the run had taken by its last checkpoint, earlier processes included


class OneShotTrainer:
    """Search loop of a one-shot optimizer on in-memory search images.

    Args:
        optimizer: an adapted :class:`~naslib_bayes.optimizers.oneshot.OneShotOptimizer`.
        images, labels: the search images (N, C, H, W) and labels (N,), on the device.
        batch_size: images per step (per half for DARTS's two batches).
        seed: seeds the split, batch order and augmentation.
        out_dir: where ``checkpoint.pt`` goes (None: no checkpoints).
        checkpoint_every: also checkpoint every K steps (0: only at epoch ends).
        augment: optional ``augment(batch, generator) -> batch`` applied to training batches.
        progress: optional ``progress(epoch, step, steps_per_epoch)`` callback.
        stop_after_steps: raise :class:`Interrupted` after that many steps of this call
            (simulates a killed run in tests).
        run: the settings that define the run (JSON-like, keyed by the names a user set them
            with), saved in checkpoints; a resumed checkpoint must have the same.
    """

    def __init__(self, optimizer, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0,
                 out_dir: str | Path | None = None, checkpoint_every: int = 0, augment: Augment | None = None,
                 progress: Callable[[int, int, int], None] | None = None, stop_after_steps: int | None = None,
                 run: dict[str, Any] | None = None):
        self.optimizer = optimizer
        self.images, self.labels = images, labels
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.checkpoint_every = int(checkpoint_every)
        self.augment = augment
        self.progress = progress
        self.stop_after_steps = stop_after_steps
        self.run = dict(run or {})
        n, halves = images.shape[0], optimizer.uses_validation_split
        if halves:
            perm = torch.randperm(n, generator=ckpt.generator(self.seed, 1))
            k = weight_images(n, halves)
            self.train_index, self.val_index = perm[:k], perm[k:]
        else:
            self.train_index, self.val_index = torch.arange(n), None
        self.steps_per_epoch = steps_per_epoch(n, self.batch_size, halves)
        if len(self.train_index) < self.batch_size:
            self.batch_size = len(self.train_index)
        total = optimizer.total_epochs
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer.op_optimizer, T_max=total, eta_min=float(optimizer.config["lr_min"]))
        self.state = SearchState()
        self.clock = ckpt.RunClock()

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / ckpt.CHECKPOINT_FILE

    # ---- batches ------------------------------------------------------------------------------
    def _order(self, index: torch.Tensor, epoch: int, stream: int) -> torch.Tensor:
        return index[torch.randperm(len(index), generator=ckpt.generator(self.seed, 2, stream, epoch))]

    def _batch(self, order: torch.Tensor, step: int, epoch: int, stream: int):
        start = (step * self.batch_size) % max(len(order) - self.batch_size + 1, 1)
        idx = order[start: start + self.batch_size]
        x, y = self.images[idx], self.labels[idx]
        if self.augment is not None:
            x = self.augment(x, ckpt.generator(self.seed, 3, stream, epoch, step))
        return x, y

    # ---- checkpoints ------------------------------------------------------------------------------
    @property
    def earlier_wall_s(self) -> float:
        """Wall time of the earlier processes of a resumed run, up to the checkpoint it resumed (0 if none)."""
        return self.clock.earlier_s

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        self.state.wall_s_before = self.clock.total_s()
        ckpt.save(self.checkpoint_path, {
            "format": FORMAT,
            "run": self.run,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loop": self.state.__dict__,
        })

    def load_checkpoint(self) -> bool:
        """Restore from ``checkpoint.pt`` if it exists; returns whether it did.

        A checkpoint of another kind or of another run is a :class:`UserError` (nothing restored).
        """
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        state = ckpt.load_run_checkpoint(path, FORMAT, "one-shot search", self.run)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.state = SearchState(**state["loop"])
        return True

    # ---- the loop -------------------------------------------------------------------------------
    def search(self, resume: bool = False) -> SearchState:
        opt = self.optimizer
        if resume:
            self.load_checkpoint()
        self.clock = ckpt.RunClock(self.state.wall_s_before)
        if self.state.epoch == 0 and self.state.step == 0:
            opt.before_training()
        steps_this_call = 0
        st = self.state
        while st.epoch < opt.total_epochs:
            epoch = st.epoch
            started = time.perf_counter() - st.elapsed_in_epoch
            cpu_started = time.process_time() - st.cpu_in_epoch
            if st.step == 0:
                opt.new_epoch(epoch)
                st.sums = [0.0] * 6
            elif opt.epoch != epoch:
                opt.epoch = epoch  # resumed mid-epoch: new_epoch already ran before the checkpoint
            steps_this_call = self._train_steps(epoch, started, cpu_started, steps_this_call)
            self._end_epoch(epoch, started, cpu_started)
        opt.after_training()
        return st

    def _train_steps(self, epoch: int, started: float, cpu_started: float, steps_this_call: int) -> int:
        """The epoch's remaining steps, checkpointing every ``checkpoint_every``; the count of steps
        this call has made, raising :class:`Interrupted` once it reaches ``stop_after_steps``."""
        opt, st = self.optimizer, self.state
        train_order = self._order(self.train_index, epoch, 0)
        val_order = None if self.val_index is None else self._order(self.val_index, epoch, 1)
        while st.step < self.steps_per_epoch:
            step = st.step
            data_train = self._batch(train_order, step, epoch, 0)
            data_val = None if val_order is None else self._batch(val_order, step, epoch, 1)
            logits, logits_val, loss, val_loss = opt.step(data_train, data_val)
            require_finite_loss(float(loss), epoch, step, opt.op_optimizer.param_groups[0]["lr"])
            self._accumulate(logits, data_train[1], loss, logits_val, None if data_val is None else data_val[1], val_loss)
            st.step += 1
            steps_this_call += 1
            if self.progress is not None:
                self.progress(epoch, st.step, self.steps_per_epoch)
            if self.checkpoint_every and st.step % self.checkpoint_every == 0 and st.step < self.steps_per_epoch:
                st.elapsed_in_epoch = time.perf_counter() - started
                st.cpu_in_epoch = time.process_time() - cpu_started
                self.save_checkpoint()
            if self.stop_after_steps is not None and steps_this_call >= self.stop_after_steps:
                raise Interrupted(f"stopped after {steps_this_call} steps")
        return steps_this_call

    def _end_epoch(self, epoch: int, started: float, cpu_started: float) -> None:
        """The optimizer's end of epoch, the scheduler's step, the epoch's statistics and a checkpoint."""
        opt, st = self.optimizer, self.state
        opt.end_epoch(epoch)
        lr = opt.op_optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        s = st.sums
        st.stats.append(EpochStats(
            epoch, s[0] / max(s[2], 1), 100.0 * s[1] / max(s[2], 1),
            s[3] / s[5] if s[5] else None, 100.0 * s[4] / s[5] if s[5] else None, lr, elapsed).as_dict())
        st.epoch_times.append(elapsed)
        st.epoch_cpu_times.append(cpu)
        st.epoch += 1
        st.step = 0
        st.elapsed_in_epoch = 0.0
        st.cpu_in_epoch = 0.0
        self.save_checkpoint()

    def _accumulate(self, logits, labels, loss, logits_val, labels_val, val_loss) -> None:
        s = self.state.sums
        n = labels.shape[0]
        s[0] += float(loss) * n
        s[1] += float((logits.argmax(1) == labels).sum())
        s[2] += n
        if logits_val is not None:
            m = labels_val.shape[0]
            s[3] += float(val_loss) * m
            s[4] += float((logits_val.argmax(1) == labels_val).sum())
            s[5] += m


def weight_images(search_images: int, halves: bool) -> int:
    """How many search images train the weights: with ``halves`` (a method that trains its
    architecture on held-out batches, DARTS) the first half of the seeded split, else all."""
    return search_images // 2 if halves else search_images


def steps_per_epoch(search_images: int, batch_size: int, halves: bool) -> int:
    """Steps of an epoch: the full batches of the images that train the weights (at least one)."""
    return max(1, weight_images(search_images, halves) // batch_size)


class Interrupted(RuntimeError):
    """Raised by :class:`OneShotTrainer` when ``stop_after_steps`` is reached."""


def epoch_time_summary(times: list[float]) -> dict[str, float]:
    return {"mean": sum(times) / len(times) if times else math.nan, "total": sum(times)}
