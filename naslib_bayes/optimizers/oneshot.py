"""One-shot optimizers: the contract shared by BayesNAS, DARTS and the random-cell baseline.

The methods mirror NASLib's one-shot ``MetaOptimizer`` (``using_step_function = True``) so that
NASLib's ``Trainer`` and naslib-bayes's own :class:`~naslib_bayes.training.oneshot.OneShotTrainer`
drive them the same way:

* ``adapt_search_space(supernet, dataset=None, scope=None, dataset_api=None)`` binds the
  optimizer to a supernet (an ``nn.Module`` with ``forward(x, mixer)`` and ``topologies()``;
  see :mod:`naslib_bayes.search_spaces.oneshot`) and builds ``op_optimizer`` (SGD on the
  network weights, NASLib's trainer schedules it) and the architecture state;
* ``new_epoch(epoch)``; ``step(data_train, data_val)`` returning ``(logits_train,
  logits_val, train_loss, val_loss)`` (``logits_val``/``val_loss`` are None when
  ``data_val`` is None and the method does not use it);
* ``get_final_architecture()`` (an NB201 op-index tuple or a DARTS
  :class:`~naslib_bayes.search_spaces.darts.genotype.Genotype`), ``get_op_optimizer()``,
  ``get_checkpointables()`` (with a ``"model"`` entry holding supernet + architecture
  parameters), ``get_model_size()`` (MB of network parameters), ``before_training()``,
  ``after_training()``.

One extension: ``end_epoch(epoch)`` runs at the end of every epoch when the driver calls it
(naslib-bayes's trainer does). Work scheduled there (BayesNAS's architecture update) is done
lazily by the next ``new_epoch``/``after_training`` when a driver does not call it, so
NASLib's Trainer gets the same result.

Schedule: ``warmup_epochs`` of weight-only training, then ``rounds`` rounds of ``epochs``
epochs each; ``total_epochs = warmup_epochs + rounds * epochs`` for every method so that all
see the same number of epochs.
"""

from __future__ import annotations

import abc
import copy
import random
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import LowerBound, above, at_least, merge_hyperparameters


class OneShotModel(nn.Module):
    """Supernet plus the optimizer's architecture state: the ``"model"`` checkpointable."""

    def __init__(self, net: nn.Module, arch: nn.Module):
        super().__init__()
        self.net = net
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.arch)


class OneShotOptimizer(abc.ABC):
    """Base class of the one-shot optimizers (see the module docstring)."""

    using_step_function = True
    kind = "one-shot"
    #: True when the method trains architecture parameters on a separate half of the search
    #: images (DARTS); the trainer then splits the search images 50/50.
    uses_validation_split = False
    common_defaults: dict[str, Any] = {
        "lr": 0.05,
        "lr_min": 0.001,
        "momentum": 0.9,
        "weight_decay": 3e-4,
        "grad_clip": 5.0,
        "warmup_epochs": 1,
        "epochs": 1,
        "rounds": 1,
    }
    defaults: dict[str, Any] = {}
    # torch's SGD raises a traceback below them, or (lr_min, weight_decay, grad_clip) runs on a
    # negative learning rate, a weight growth or no clipping.
    common_lower_bounds = {"lr": above(0), "lr_min": at_least(0), "momentum": at_least(0),
                           "weight_decay": at_least(0), "grad_clip": at_least(0)}
    lower_bounds: dict[str, LowerBound] = {}

    def __init__(self, seed: int = 0, **hyperparameters: Any):
        given = {k: v for k, v in hyperparameters.items() if v is not None}  # None: keep the default
        self.config = merge_hyperparameters(type(self).__name__, {**self.common_defaults, **self.defaults}, given,
                                            {**self.common_lower_bounds, **self.lower_bounds})
        for key in ("warmup_epochs",):
            if int(self.config[key]) < 0:
                raise UserError(f"{key} must be >= 0")
        for key in ("epochs", "rounds"):
            if int(self.config[key]) < 1:
                raise UserError(f"{key} must be >= 1")
        if float(self.config["lr_min"]) > float(self.config["lr"]):  # the cosine would raise the rate
            raise UserError(f"lr_min={self.config['lr_min']} must not exceed lr={self.config['lr']}")
        self.seed = int(seed)
        self.model: OneShotModel | None = None
        self.op_optimizer: torch.optim.Optimizer | None = None
        self.arch_optimizer: torch.optim.Optimizer | None = None
        self.epoch = -1
        self.space_name: str | None = None

    # ---- schedule ---------------------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        c = self.config
        return int(c["warmup_epochs"]) + int(c["rounds"]) * int(c["epochs"])

    def is_warmup(self, epoch: int) -> bool:
        return epoch < int(self.config["warmup_epochs"])

    def ends_round(self, epoch: int) -> bool:
        """True when ``epoch`` is the last epoch of a round."""
        offset = epoch - int(self.config["warmup_epochs"])
        return offset >= 0 and (offset + 1) % int(self.config["epochs"]) == 0

    # ---- NASLib's MetaOptimizer methods ----------------------------------------------------------
    def adapt_search_space(self, search_space, dataset=None, scope=None, dataset_api=None, **kwargs) -> None:
        """Take ownership of the supernet ``search_space`` and build the optimizers."""
        if not isinstance(search_space, nn.Module) or not hasattr(search_space, "topologies"):
            raise TypeError("adapt_search_space needs a supernet module (forward(x, mixer), topologies())")
        self.space_name = getattr(search_space, "space_name", None)
        self.dataset = dataset
        arch = self.build_architecture(search_space)
        self.model = OneShotModel(search_space, arch)
        c = self.config
        groups = [{"params": list(search_space.parameters()), "weight_decay": float(c["weight_decay"])}]
        groups += self.extra_weight_groups()
        self.op_optimizer = torch.optim.SGD(groups, lr=float(c["lr"]), momentum=float(c["momentum"]))
        self.arch_optimizer = self.build_arch_optimizer()
        self.model.train()

    def new_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def end_epoch(self, epoch: int) -> None:
        """End-of-epoch work (see the module docstring); nothing by default."""

    def step(self, data_train, data_val=None):
        raise NotImplementedError

    def train_statistics(self, report_incumbent: bool = True):
        return None

    def test_statistics(self):
        return None

    @abc.abstractmethod
    def get_final_architecture(self):
        """The derived discrete architecture."""

    def get_op_optimizer(self):
        return self.op_optimizer

    def get_checkpointables(self) -> dict[str, Any]:
        entries = {"model": self.model, "op_optimizer": self.op_optimizer}
        if self.arch_optimizer is not None:
            entries["arch_optimizer"] = self.arch_optimizer
        return entries

    def get_model_size(self) -> float:
        """Network parameters in MB (millions), NASLib's ``count_parameters_in_MB``."""
        if self.model is None:
            return 0.0
        return sum(p.numel() for name, p in self.model.net.named_parameters() if "auxiliary" not in name) / 1e6

    def before_training(self) -> None:
        pass

    def after_training(self) -> None:
        pass

    # ---- state beyond the checkpointables (for resume) -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue a search exactly (model, optimizers, own state)."""
        state = {"epoch": self.epoch, "model": self.model.state_dict(), "op_optimizer": self.op_optimizer.state_dict()}
        if self.arch_optimizer is not None:
            state["arch_optimizer"] = self.arch_optimizer.state_dict()
        state["extra"] = self.extra_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.op_optimizer.load_state_dict(state["op_optimizer"])
        if self.arch_optimizer is not None:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.load_extra_state(state.get("extra", {}))

    # ---- what subclasses write ----------------------------------------------------------------
    @abc.abstractmethod
    def build_architecture(self, supernet: nn.Module) -> nn.Module:
        """The architecture state (a module that is also the supernet's mixer)."""

    def extra_weight_groups(self) -> list[dict]:
        """Further parameter groups of ``op_optimizer`` (BayesNAS: the switches)."""
        return []

    def build_arch_optimizer(self) -> torch.optim.Optimizer | None:
        return None

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def result_extras(self) -> dict[str, Any]:
        """Extra result.json keys (declared in the result schema)."""
        return {}

    # ---- helpers --------------------------------------------------------------------------
    def weight_step(self, x: torch.Tensor, y: torch.Tensor, extra_loss=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on the network weights; returns (logits, cross-entropy) detached."""
        self.model.train()
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        total = loss if extra_loss is None else loss + extra_loss()
        self.op_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.before_weight_update()
        clip = float(self.config["grad_clip"])
        if clip > 0:
            nn.utils.clip_grad_norm_(self.model.net.parameters(), clip)
        self.op_optimizer.step()
        self.after_weight_update()
        return logits.detach(), loss.detach()

    def before_weight_update(self) -> None:
        """Hook between backward and the SGD step (BayesNAS drops switch gradients in warm-up)."""

    def after_weight_update(self) -> None:
        """Hook after the SGD step (BayesNAS keeps pruned switches at zero)."""

    def random(self) -> random.Random:
        """A ``random.Random`` seeded from the optimizer's seed (architecture sampling)."""
        return random.Random(self.seed)


def supernet_copy(supernet: nn.Module) -> nn.Module:
    """A deep copy (NASLib's optimizers clone the search space they are given)."""
    return copy.deepcopy(supernet)
