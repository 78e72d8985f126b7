"""Training a derived architecture from scratch: the evaluation phase of one-shot NAS.

``--arch`` takes an NB201 cell string, a DARTS genotype (JSON text or a JSON file) or a search's
``result.json``. NB201 cells train in the benchmark's network
(:class:`~naslib_bayes.search_spaces.nasbench201.model.NB201Network`, default C=16, N=5);
DARTS genotypes in :class:`~naslib_bayes.search_spaces.darts.eval_network.DartsEvalNetwork`
(default C=36, 20 cells) with drop-path (probability ramped linearly from 0 over the epochs,
as in DARTS) and an auxiliary head (weight 0.4). Training: SGD with Nesterov momentum 0.9,
cosine learning rate to 0 over the epochs, gradient clipping at 5, the dataset's usual
crop/flip augmentation plus cutout. The model trains on the training split (with the
validation split, when the dataset has one) and is tested once, at the end, on the held-out
test split.

A checkpoint (``checkpoint.pt``) is written after every epoch with the run's settings
(:meth:`TrainSettings.run`); ``resume`` continues only a run with the same settings.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes import results
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import whole_numbers
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.darts.search_network import reduction_layers
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.training import checkpoint as ckpt
from naslib_bayes.training.divergence import require_finite_loss

if TYPE_CHECKING:
    from naslib_bayes.data import Augment

#: Per architecture kind: channels, cells, batch size, lr, weight decay, auxiliary weight, drop-path.
DEFAULTS = {
    "nasbench201": dict(channels=16, cells=5, batch_size=256, lr=0.1, weight_decay=5e-4, auxiliary_weight=0.0,
                        drop_path=0.0),
    "darts": dict(channels=36, cells=20, batch_size=96, lr=0.025, weight_decay=3e-4, auxiliary_weight=0.4,
                  drop_path=0.2),
}
#: Cutout side per dataset: half the image side for the RGB sets, a quarter for digit images.
CUTOUT = {"cifar10": 16, "cifar100": 16, "ImageNet16-120": 8, "mnist": 7, "digits": 2}
FORMAT = "naslib-bayes train"


def parse_arch(text: str) -> tuple[str, nb201.Cell | Genotype]:
    """``("nasbench201", cell)`` or ``("darts", genotype)`` from an ``--arch`` value."""
    text = str(text).strip()
    data: Any = None
    if text.startswith("Genotype("):  # DARTS's genotypes.py form, which would be read as a malformed NB201 string
        raise UserError("--arch: DARTS's Python form Genotype(...) is not read; give the genotype as JSON, "
                        '{"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5], "reduce": [...], '
                        '"reduce_concat": [2, 3, 4, 5]}, or a JSON file holding it')
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UserError(f"--arch: not valid JSON ({exc})") from None
        source = "--arch"
    elif not text.startswith("|") and Path(text).exists():
        path = Path(text)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read an architecture from it ({exc})") from None
        source = str(path)
    elif not text.startswith("|") and ("/" in text or text.endswith(".json")):  # a path, not a cell string
        raise UserError(f"--arch {text}: no such file")
    else:
        return "nasbench201", nb201.from_string(text)
    if isinstance(data, dict) and "final_architecture" in data:  # a search's result.json
        final = data["final_architecture"]
        if isinstance(final, str):
            try:
                return "nasbench201", nb201.from_string(final)
            except UserError as exc:  # e.g. a compression's result.json, whose architecture is a width list
                raise UserError(f"{source}: {exc}") from None
        data = final
    return "darts", Genotype.from_json(data, source=source)


@dataclass
class TrainConfig:
    """Settings of one training run (None: the per-kind :data:`DEFAULTS`)."""

    arch: str
    dataset: str
    epochs: int
    data_root: str | None = None
    seed: int = 0
    data_seed: int = 0
    channels: int | None = None
    cells: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    grad_clip: float = 5.0
    cutout: int | None = None
    auxiliary_weight: float | None = None
    drop_path: float | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        whole_numbers(self, ("epochs", "seed", "data_seed", "channels", "cells", "batch_size", "cutout"))


class _LogitsOnly(nn.Module):
    """Adapts a network returning logits to the ``(logits, aux)`` convention."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), None


def build_network(kind: str, arch, channels: int, cells: int, num_classes: int, in_channels: int,
                  auxiliary: bool, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "nasbench201":
            from naslib_bayes.search_spaces.nasbench201.model import NB201Network

            return _LogitsOnly(NB201Network(arch, C=channels, N=cells, num_classes=num_classes, in_channels=in_channels))
        from naslib_bayes.search_spaces.darts.eval_network import DartsEvalNetwork

        return DartsEvalNetwork(arch, channels, num_classes, cells, auxiliary=auxiliary, in_channels=in_channels)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent (eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits, _ = model(images[start:start + batch_size])
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return 100.0 * correct / max(len(labels), 1)


@dataclass(frozen=True)
class TrainSettings:
    """The settings a training run computes with: :class:`TrainConfig`'s, per-kind defaults filled in."""

    kind: str
    arch: nb201.Cell | Genotype
    dataset: str
    epochs: int
    seed: int
    data_seed: int
    channels: int
    cells: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    grad_clip: float
    cutout: int
    auxiliary_weight: float
    drop_path: float

    @property
    def architecture(self) -> str:
        """The architecture in canonical form (whatever ``--arch`` named it by): cell string or genotype JSON."""
        if self.kind == "nasbench201":
            return nb201.to_string(self.arch)
        return json.dumps(self.arch.to_json(), sort_keys=True)

    def run(self) -> dict[str, Any]:
        """What defines the run, keyed by the option that sets it: a checkpoint resumes only the same."""
        return {"kind": self.kind, "--arch": self.architecture, "--dataset": self.dataset, "--epochs": self.epochs,
                "--seed": self.seed, "data_seed": self.data_seed, "--channels": self.channels, "--cells": self.cells,
                "--batch-size": self.batch_size, "--lr": self.lr, "momentum": self.momentum,
                "--weight-decay": self.weight_decay, "grad_clip": self.grad_clip, "--cutout": self.cutout,
                "--auxiliary-weight": self.auxiliary_weight, "--drop-path": self.drop_path}


#: The range of each :class:`TrainConfig` setting the command's argument types check, by option:
#: from Python a size of 0 fell back to the default network, and 0 epochs tested an untrained one.
_RANGES = {
    "epochs": ("--epochs", "a positive integer", lambda v: v >= 1),
    "channels": ("--channels", "a positive integer", lambda v: v >= 1),
    "cells": ("--cells", "a positive integer", lambda v: v >= 1),
    "batch_size": ("--batch-size", "a positive integer", lambda v: v >= 1),
    "lr": ("--lr", "a positive number", lambda v: 0 < v < math.inf),
    "weight_decay": ("--weight-decay", "a non-negative number", lambda v: 0 <= v < math.inf),
    "cutout": ("--cutout", "a non-negative integer", lambda v: v >= 0),
    "auxiliary_weight": ("--auxiliary-weight", "a non-negative number", lambda v: 0 <= v < math.inf),
    "drop_path": ("--drop-path", "a probability in [0, 1)", lambda v: 0 <= v < 1),
}


def check_ranges(cfg: TrainConfig) -> None:
    """Refuse a given setting out of its range, naming its option (None: the per-kind default)."""
    for name, (option, expected, valid) in _RANGES.items():
        value = getattr(cfg, name)
        if value is not None and not valid(value):
            raise UserError(f"{option} {value}: expected {expected}")


def resolve_settings(cfg: TrainConfig) -> TrainSettings:
    """Parse ``cfg.arch`` and fill in the defaults of its kind (:data:`DEFAULTS`, :data:`CUTOUT`)."""
    from naslib_bayes.data import canonical_name
    from naslib_bayes.data.loaders import require_root

    check_ranges(cfg)
    kind, arch = parse_arch(cfg.arch)
    d = DEFAULTS[kind]

    def given_or_default(name: str):
        value = getattr(cfg, name)
        return d[name] if value is None else value

    aux_weight, drop_path = given_or_default("auxiliary_weight"), given_or_default("drop_path")
    if kind == "nasbench201" and (aux_weight or drop_path):
        raise UserError("drop-path and the auxiliary head apply to DARTS networks only")
    dataset = canonical_name(cfg.dataset)
    require_root(dataset, cfg.data_root)  # before a command makes its folder, not once the data loads
    cells, batch_size = cfg.cells or d["cells"], cfg.batch_size or d["batch_size"]
    if kind == "darts" and aux_weight and not reduction_layers(cells):  # the head reads the second reduction cell
        if cfg.auxiliary_weight is not None:
            raise UserError(f"--auxiliary-weight {aux_weight}: a DARTS network of {cells} cells has no reduction "
                            "cell for the auxiliary head to read; use --cells 3 or more, or --auxiliary-weight 0")
        aux_weight = 0.0  # so result.json does not record a loss that was never added
    if kind == "darts" and aux_weight and batch_size < 2:
        raise UserError(f"--batch-size {batch_size}: the DARTS auxiliary head normalises one value per channel "
                        "(1x1 maps), which a batch of one image cannot; use --batch-size 2 or more, "
                        "or --auxiliary-weight 0")
    return TrainSettings(
        kind=kind, arch=arch, dataset=dataset, epochs=cfg.epochs, seed=cfg.seed, data_seed=cfg.data_seed,
        channels=cfg.channels or d["channels"], cells=cells, batch_size=batch_size, lr=given_or_default("lr"),
        momentum=cfg.momentum,
        weight_decay=given_or_default("weight_decay"), grad_clip=cfg.grad_clip,
        cutout=CUTOUT.get(dataset, 0) if cfg.cutout is None else cfg.cutout,
        auxiliary_weight=aux_weight, drop_path=drop_path)


@dataclass
class TrainingData:
    """The images a run trains on and tests on, on its device, and its augmentation."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    augment: Augment
    load_started: float  # time.perf_counter() as loading began: a run counts it in its wall time


def load_training_data(cfg: TrainConfig, settings: TrainSettings, device: torch.device) -> TrainingData:
    """The training split (with the validation split when a test split is held out) and the test split
    (a command loads them before it makes its folder: data it cannot read leaves none behind)."""
    from naslib_bayes.data import default_augment, load_dataset

    load_started = time.perf_counter()
    splits = load_dataset(cfg.dataset, cfg.data_root, seed=settings.data_seed)
    height, width = splits.train.image_shape[-2:]
    if settings.cutout > max(height, width):  # most images blanked; every one from twice the side on
        raise UserError(f"--cutout {settings.cutout} is larger than the {height}x{width} images of {splits.train.name}")
    name = splits.train.name
    test = splits.test or splits.val
    if test is None:
        raise UserError(f"dataset {name} has no held-out split to test on")
    parts = [splits.train] + ([splits.val] if splits.val is not None and splits.test is not None else [])
    return TrainingData(
        name=name,
        images=torch.cat([p.images for p in parts]).to(device),
        labels=torch.cat([p.labels for p in parts]).to(device),
        test_images=test.images, test_labels=test.labels,
        num_classes=splits.train.num_classes,
        augment=replace(default_augment(name, splits.train), cutout=settings.cutout),
        load_started=load_started,
    )


@dataclass
class Training:
    """A run's network, optimizer and scheduler, and how far it got (what a checkpoint holds)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)


def build_training(settings: TrainSettings, data: TrainingData, device: torch.device) -> Training:
    """The network initialised from the seed, SGD (Nesterov) and the cosine schedule over the epochs."""
    model = build_network(settings.kind, settings.arch, settings.channels, settings.cells, data.num_classes,
                          data.images.shape[1], settings.auxiliary_weight > 0, settings.seed).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, nesterov=settings.momentum > 0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=0.0)
    return Training(model, optimizer, scheduler)


def save_checkpoint(path: Path, training: Training, run: dict[str, Any], wall_s: float) -> None:
    """Write the run's state and its settings ``run`` (:func:`run_settings`); ``wall_s``: its wall time
    so far, earlier processes included."""
    ckpt.save(path, {"format": FORMAT, "run": run, "model": training.model.state_dict(),
                     "optimizer": training.optimizer.state_dict(), "scheduler": training.scheduler.state_dict(),
                     "epoch": training.epoch, "history": training.history, "epoch_times": training.epoch_times,
                     "wall_s": wall_s})


def run_settings(cfg: TrainConfig, settings: TrainSettings) -> dict[str, Any]:
    """What defines the run: its settings (:meth:`TrainSettings.run`), the contents of its data files
    and torch's thread count."""
    return {**settings.run(), **ckpt.environment_settings(cfg.dataset, cfg.data_root)}


def restore_checkpoint(path: Path, training: Training, run: dict[str, Any]) -> float:
    """Continue from the checkpoint at ``path``; returns the wall time the run had taken up to it.
    One of another kind or of a run other than ``run`` (:func:`run_settings`) is a :class:`UserError`.

    The run's settings are checked before anything is restored: the scheduler's state holds the
    number of epochs it anneals over, so a run resumed with other ``--epochs`` would follow the
    old schedule.
    """
    state = ckpt.load_run_checkpoint(path, FORMAT, "train", run)
    training.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    training.epoch, training.history, training.epoch_times = state["epoch"], state["history"], state["epoch_times"]
    return float(state.get("wall_s", 0.0))  # older checkpoints did not record it


def train_epoch(training: Training, settings: TrainSettings, data: TrainingData,
                progress: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
    """Train one epoch (``training.epoch``); returns its statistics.

    Batch order, augmentation and drop-path draw from generators seeded by (seed, epoch[, step]),
    so an epoch trains the same whether or not the run was resumed before it.
    """
    model, optimizer, epoch = training.model, training.optimizer, training.epoch
    images, labels, augment, batch_size = data.images, data.labels, data.augment, settings.batch_size
    device = images.device
    model.train()
    if hasattr(model, "drop_path_prob"):
        model.drop_path_prob = settings.drop_path * epoch / settings.epochs
        model.generator = torch.Generator(device=device).manual_seed(settings.seed * 7919 + epoch)
    # the training streams: base 0, keyed by the seed, then the purpose (1: order, 2: augmentation)
    order = torch.randperm(len(labels), generator=ckpt.generator(0, settings.seed, 1, epoch)).to(device)
    steps = max(1, len(labels) // batch_size)
    total_loss, correct, seen = 0.0, 0, 0
    for step in range(steps):
        idx = order[step * batch_size:(step + 1) * batch_size]
        x = images[idx]
        if not augment.is_identity:
            x = augment(x, ckpt.generator(0, settings.seed, 2, epoch, step))
        y = labels[idx]
        logits, aux = model(x)
        loss = F.cross_entropy(logits, y)
        if aux is not None:
            loss = loss + settings.auxiliary_weight * F.cross_entropy(aux, y)
        require_finite_loss(float(loss.detach()), epoch, step, optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        total_loss += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if progress is not None:
            progress(epoch, step + 1, steps)
    return {"epoch": epoch, "train_loss": total_loss / seen, "train_accuracy": 100.0 * correct / seen,
            "lr": optimizer.param_groups[0]["lr"]}


def _momentum_text(momentum: float) -> str:
    """How the optimizer built by :func:`build_training` uses ``momentum`` (Nesterov's when there is any)."""
    return f"nesterov momentum {momentum}" if momentum > 0 else "without momentum"


def training_result(cfg: TrainConfig, settings: TrainSettings, data: TrainingData, training: Training,
                    wall_time_s: float) -> dict[str, Any]:
    """Test the trained network once on the held-out split; the ``result.json`` dict."""
    model, device = training.model, data.images.device
    test_accuracy = accuracy(model, data.test_images.to(device), data.test_labels.to(device))
    params = sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n) / 1e6
    s = settings
    config = {**asdict(cfg), "kind": s.kind, "channels": s.channels, "cells": s.cells, "batch_size": s.batch_size,
              "lr": s.lr, "weight_decay": s.weight_decay, "auxiliary_weight": s.auxiliary_weight,
              "drop_path": s.drop_path, "cutout": s.cutout, "augmentation": asdict(data.augment),
              "train_images": int(len(data.labels)), "test_images": int(len(data.test_labels)),
              "schedule": f"SGD {_momentum_text(s.momentum)}, lr {s.lr} cosine to 0 over {s.epochs} epochs"}
    nb201_cell = s.kind == "nasbench201"
    return results.new_result(
        "train",
        torch_threads=results.torch_threads(),
        search_space=s.kind,
        dataset=data.name,
        seed=s.seed,
        final_architecture=nb201.to_string(s.arch) if nb201_cell else s.arch.to_json(),
        final_architecture_op_indices=list(s.arch) if nb201_cell else None,
        test_accuracy=test_accuracy,
        params_mb=params,
        epoch_stats=training.history,
        epoch_times_s=training.epoch_times,
        checkpoint=ckpt.CHECKPOINT_FILE,
        wall_time_s=wall_time_s,
        config=config,
        notes=[f"trained on {len(data.labels)} images, tested once on the {len(data.test_labels)} held-out images"],
    )


def run_training(cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
                 progress: Callable[[int, int, int], None] | None = None,
                 data: TrainingData | None = None) -> dict[str, Any]:
    """Train ``cfg.arch`` from scratch; returns the result dict and writes ``checkpoint.pt`` after every epoch.

    ``resume`` continues the run checkpointed in ``out_dir``, if there is a checkpoint; one of
    another kind or of a run with other settings (:func:`run_settings`) is a :class:`UserError`.
    ``data``: the run's data, loaded already by :func:`load_training_data` (as a command does
    before it makes ``out_dir``); its loading counts in the wall time.
    """
    clock = ckpt.RunClock()  # resumed: the earlier processes' time too, as a resumed search counts it
    settings = resolve_settings(cfg)
    device = torch.device(cfg.device)
    if data is None:
        data = load_training_data(cfg, settings, device)
    else:
        clock.started = data.load_started
    training = build_training(settings, data, device)
    path, run = Path(out_dir) / ckpt.CHECKPOINT_FILE, run_settings(cfg, settings)
    if resume and path.exists():
        clock.earlier_s = restore_checkpoint(path, training, run)
    while training.epoch < settings.epochs:
        started = time.perf_counter()
        training.history.append(train_epoch(training, settings, data, progress))
        training.scheduler.step()
        training.epoch += 1
        training.epoch_times.append(time.perf_counter() - started)
        save_checkpoint(path, training, run, clock.total_s())
    return training_result(cfg, settings, data, training, clock.total_s())
