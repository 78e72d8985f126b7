"""Checkpoints of a compression run, so that a killed run continues where it stopped.

A run has stages (the dense baseline, then the compression); each saves what its loop needs to
continue after every epoch. All stages live in one file, written atomically, together with the
settings of the run: a checkpoint continues only the run it was written by. The file holds
tensors and plain values only (the switched network as :func:`network_state`), so it is read
without unpickling code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from naslib_bayes.compression.io import build_module, module_spec
from naslib_bayes.compression.switched import SwitchedNetwork
from naslib_bayes.errors import UserError
from naslib_bayes.training import checkpoint as ckpt

FORMAT = "naslib-bayes compression"


class StageCheckpoint:
    """The checkpoint file of one run: ``get(stage)`` the saved state, ``put(stage, state)`` saves.

    Args:
        path: the checkpoint file.
        run: the settings that define the run (JSON-like), keyed by the names a user set them
            with (e.g. command-line options); a resumed checkpoint must match them.
        resume: load ``path`` (it must exist and be of this run); otherwise start empty.

    ``clock`` counts the run's wall time over its processes (each save records it): since the
    checkpoint was made, plus what a resumed checkpoint had recorded.
    """

    def __init__(self, path: str | Path, run: dict[str, Any], resume: bool = False):
        self.path = Path(path)
        self.run = run
        self.stages: dict[str, dict[str, Any]] = {}
        self.clock = ckpt.RunClock()
        if resume:
            self._load()

    def _load(self) -> None:
        if not self.path.exists():
            raise UserError(f"--resume: no checkpoint {self.path}")
        state = ckpt.load_run_checkpoint(self.path, FORMAT, "compression", self.run)
        self.stages = state["stages"]
        self.clock.earlier_s = float(state.get("wall_s", 0.0))  # older checkpoints did not record it

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.stages.get(stage)

    def put(self, stage: str, state: dict[str, Any]) -> None:
        self.stages[stage] = state
        ckpt.save(self.path, {"format": FORMAT, "run": self.run, "stages": self.stages, "wall_s": self.clock.total_s()})


def network_state(net: SwitchedNetwork) -> dict[str, Any]:
    """``net`` as tensors and plain values, for a checkpoint (:func:`restore_network` rebuilds it).

    A pruned network has widths no model of the user's has, so its modules are described as
    ``widths.json`` describes them, with what that leaves out and a resumed run must keep: which
    parameters are frozen and which activations work in place.
    """
    return {"names": list(net.names), "input_shape": list(net.input_shape),
            "modules": [{**module_spec(m), "inplace": bool(getattr(m, "inplace", False))} for m in net.steps],
            "state": net.state_dict(), "training": net.training,
            "frozen": [name for name, p in net.named_parameters() if not p.requires_grad]}


def restore_network(saved: dict[str, Any] | nn.Module, device: torch.device) -> SwitchedNetwork:
    """The switched network :func:`network_state` saved, on ``device``, its weights in their saved
    dtypes. A checkpoint of an earlier version holds the module itself (read only when trusted)."""
    if isinstance(saved, nn.Module):
        return saved.to(device)
    with torch.random.fork_rng(devices=[]):  # fresh layers' initialisation, replaced by the saved weights
        chain = [(name, _module(spec)) for name, spec in zip(saved["names"], saved["modules"])]
        net = SwitchedNetwork(chain, tuple(saved["input_shape"]))
    net.load_state_dict(saved["state"], assign=True)  # assign: the saved dtypes, not the fresh layers'
    frozen = set(saved["frozen"])
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(name not in frozen)
    return net.to(device).train(saved["training"])


def _module(spec: dict[str, Any]) -> nn.Module:
    module = build_module(spec)
    if spec["inplace"]:
        module.inplace = True
    return module
