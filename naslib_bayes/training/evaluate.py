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
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes import results
from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.training import checkpoint as ckpt

#: Per architecture kind: channels, cells, batch size, lr, weight decay, auxiliary weight, drop-path.
DEFAULTS = {
    "nasbench201": dict(channels=16, cells=5, batch_size=256, lr=0.1, weight_decay=5e-4, auxiliary_weight=0.0,
                        drop_path=0.0),
    "darts": dict(channels=36, cells=20, batch_size=96, lr=0.025, weight_decay=3e-4, auxiliary_weight=0.4,
                  drop_path=0.2),
}
#: Cutout side per dataset: half the image side for the RGB sets, a quarter for digit images.
CUTOUT = {"cifar10": 16, "cifar100": 16, "ImageNet16-120": 8, "mnist": 7, "digits": 2}


def parse_arch(text: str) -> tuple[str, nb201.Cell | Genotype]:
    """``("nasbench201", cell)`` or ``("darts", genotype)`` from an ``--arch`` value."""
    text = str(text).strip()
    data: Any = None
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
    else:
        return "nasbench201", nb201.from_string(text)
    if isinstance(data, dict) and "final_architecture" in data:  # a search's result.json
        final = data["final_architecture"]
        if isinstance(final, str):
            return "nasbench201", nb201.from_string(final)
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


def _generator(*keys: int) -> torch.Generator:
    value = 0
    for k in keys:
        value = (value * 1_000_003 + int(k) + 1) % (2**62)
    return torch.Generator().manual_seed(value)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent (eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits, _ = model(images[start:start + batch_size])
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return 100.0 * correct / max(len(labels), 1)


def run_training(cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
                 progress: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
    """Train ``cfg.arch`` from scratch; returns the result dict and writes ``checkpoint.pt``."""
    from naslib_bayes.data import default_augment, load_dataset

    start_time = time.perf_counter()
    kind, arch = parse_arch(cfg.arch)
    d = DEFAULTS[kind]
    channels, cells = cfg.channels or d["channels"], cfg.cells or d["cells"]
    batch_size = cfg.batch_size or d["batch_size"]
    lr = cfg.lr if cfg.lr is not None else d["lr"]
    weight_decay = cfg.weight_decay if cfg.weight_decay is not None else d["weight_decay"]
    aux_weight = cfg.auxiliary_weight if cfg.auxiliary_weight is not None else d["auxiliary_weight"]
    drop_path = cfg.drop_path if cfg.drop_path is not None else d["drop_path"]
    if kind == "nasbench201" and (aux_weight or drop_path):
        raise UserError("drop-path and the auxiliary head apply to DARTS networks only")
    splits = load_dataset(cfg.dataset, cfg.data_root, seed=cfg.data_seed)
    name = splits.train.name
    test = splits.test or splits.val
    if test is None:
        raise UserError(f"dataset {name} has no held-out split to test on")
    parts = [splits.train] + ([splits.val] if splits.val is not None and splits.test is not None else [])
    device = torch.device(cfg.device)
    images = torch.cat([p.images for p in parts]).to(device)
    labels = torch.cat([p.labels for p in parts]).to(device)
    cutout = CUTOUT.get(name, 0) if cfg.cutout is None else cfg.cutout
    augment = replace(default_augment(name, splits.train), cutout=cutout)
    model = build_network(kind, arch, channels, cells, splits.train.num_classes, images.shape[1], aux_weight > 0,
                          cfg.seed).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=weight_decay,
                                nesterov=cfg.momentum > 0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=0.0)
    out_dir = Path(out_dir)
    path = out_dir / ckpt.CHECKPOINT_FILE
    epoch, history, epoch_times = 0, [], []
    if resume and path.exists():
        state = ckpt.load(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, history, epoch_times = state["epoch"], state["history"], state["epoch_times"]
    steps = max(1, len(labels) // batch_size)
    drop_gen = torch.Generator(device=device)
    while epoch < cfg.epochs:
        started = time.perf_counter()
        model.train()
        if hasattr(model, "drop_path_prob"):
            model.drop_path_prob = drop_path * epoch / cfg.epochs
            drop_gen.manual_seed(cfg.seed * 7919 + epoch)
            model.generator = drop_gen
        order = torch.randperm(len(labels), generator=_generator(cfg.seed, 1, epoch)).to(device)
        total_loss, correct = 0.0, 0
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = augment(images[idx], _generator(cfg.seed, 2, epoch, step)) if not augment.is_identity else images[idx]
            y = labels[idx]
            logits, aux = model(x)
            loss = F.cross_entropy(logits, y)
            if aux is not None:
                loss = loss + aux_weight * F.cross_entropy(aux, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            total_loss += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            if progress is not None:
                progress(epoch, step + 1, steps)
        history.append({"epoch": epoch, "train_loss": total_loss / (steps * batch_size),
                        "train_accuracy": 100.0 * correct / (steps * batch_size), "lr": optimizer.param_groups[0]["lr"]})
        scheduler.step()
        epoch += 1
        epoch_times.append(time.perf_counter() - started)
        ckpt.save(path, {"format": "naslib-bayes train", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                         "epoch_times": epoch_times, "architecture": cfg.arch})
    test_accuracy = accuracy(model, test.images.to(device), test.labels.to(device))
    params = sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n) / 1e6
    config = {**asdict(cfg), "kind": kind, "channels": channels, "cells": cells, "batch_size": batch_size, "lr": lr,
              "weight_decay": weight_decay, "auxiliary_weight": aux_weight, "drop_path": drop_path,
              "cutout": cutout, "augmentation": asdict(augment), "train_images": int(len(labels)),
              "test_images": int(len(test.labels)), "schedule": f"SGD nesterov momentum {cfg.momentum}, lr {lr} "
              f"cosine to 0 over {cfg.epochs} epochs"}
    final = nb201.to_string(arch) if kind == "nasbench201" else arch.to_json()
    return results.new_result(
        "train",
        search_space=kind,
        dataset=name,
        seed=cfg.seed,
        final_architecture=final,
        final_architecture_op_indices=list(arch) if kind == "nasbench201" else None,
        test_accuracy=test_accuracy,
        params_mb=params,
        epoch_stats=history,
        epoch_times_s=epoch_times,
        checkpoint=ckpt.CHECKPOINT_FILE,
        wall_time_s=time.perf_counter() - start_time,
        config=config,
        notes=[f"trained on {len(labels)} images, tested once on the {len(test.labels)} held-out images"],
    )
