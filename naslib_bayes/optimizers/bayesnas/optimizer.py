"""BayesNAS as a one-shot optimizer (NASLib ``MetaOptimizer`` methods).

Schedule (all counts default to 1, as in the paper): ``warmup_epochs`` of weight-only
training, then per round ``epochs`` of joint weight-and-switch training with the loss

    cross-entropy + lambda_origin * sum_parent-groups ||omega o s||_2
                  + lambda_child  * sum_child-groups  ||omega o s||_2

(switches are in the SGD optimizer without weight decay) followed by one architecture update:
the diagonal Gauss-Newton curvature of the switches on the last ``curvature_batches``
training batches of the round, the HARD update of every cell type,
and — between rounds — pruning of the switches the entropy criterion removes (never those
of the architecture derived at that point, so the supernet stays connected). The final
architecture is derived from the last update's gammas (:mod:`.derive`).

Curvature scale (``curvature_reduction``): the training loss is the *mean* cross-entropy of
a batch plus the lambda-weighted penalty, so the Laplace approximation of that objective
uses the Hessian of the mean loss, i.e. the per-sample mean of the Gauss-Newton diagonal
(``"mean"``, the default: ``H / lambda`` is then the curvature of ``loss / lambda``). A
Bayesian reading of the whole search set as the likelihood instead multiplies it by the number
of search images (``"dataset"``: the mean times the images seen in the round's last epoch);
``"sum"`` is the plain sum over the curvature samples. The scale decides the regime of the
update: with ``H/lambda << 1/gamma``, ``gamma ~ ||s|| sqrt(lambda / sum H)``; with
``H/lambda >> 1/gamma``, ``gamma ~ ||s|| sqrt(gamma_old / n)`` (switch magnitude).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.bayesnas import derive
from naslib_bayes.optimizers.bayesnas.curvature import CurvatureResult, gauss_newton_diagonal
from naslib_bayes.optimizers.bayesnas.switches import SwitchBank, curvature_by_type
from naslib_bayes.optimizers.hyperparameters import exponent_text_float
from naslib_bayes.optimizers.oneshot import OneShotOptimizer
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import finite_or_none


def _lambda_child(value: Any) -> float:
    """``lambda_child`` as a number: its default (None: lambda_origin's) leaves its type unchecked by
    merge_hyperparameters, so text other than ``3e-4`` (YAML 1.1's reading of it) and booleans are refused here."""
    parsed = exponent_text_float(value)
    if parsed is not None:
        return parsed
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"BayesNAS: hyper-parameter lambda_child={value!r}: expected a positive number "
                        "(default: lambda_origin's)")
    return value


class BayesNAS(OneShotOptimizer):
    """BayesNAS (Zhou et al., ICML 2019); see the module docstring for the schedule.

    Hyper-parameters (besides the shared ones of :class:`OneShotOptimizer`):
        lambda_origin: sparsity weight of the parent (edge) groups (paper: 0.005/0.007/0.01).
        lambda_child: sparsity weight of the op groups (default: ``lambda_origin``).
        curvature_batches: training batches (the round's last) the curvature is computed on.
        curvature_reduction: ``mean`` (per sample, default), ``sum`` over those samples or
            ``dataset`` (the mean times the images of an epoch); see the module docstring.
        gamma_init: prior variance of every group before the first update.
    """

    defaults = {
        "lambda_origin": 0.01,
        "lambda_child": None,
        "curvature_batches": 8,
        "curvature_reduction": "mean",
        "gamma_init": 1.0,
    }

    def __init__(self, seed: int = 0, **hyperparameters: Any):
        super().__init__(seed, **hyperparameters)
        c = self.config
        if c.get("lambda_child") is None:
            c["lambda_child"] = c["lambda_origin"]
        else:
            c["lambda_child"] = _lambda_child(c["lambda_child"])
        if float(c["lambda_origin"]) <= 0 or float(c["lambda_child"]) <= 0:
            raise UserError("lambda must be positive")
        if c["curvature_reduction"] not in ("mean", "sum", "dataset"):
            raise UserError(f"curvature_reduction must be 'mean', 'sum' or 'dataset', not {c['curvature_reduction']!r}")
        if int(c["curvature_batches"]) < 1:
            raise UserError("curvature_batches must be >= 1")
        if not float(c["gamma_init"]) > 0:
            raise UserError("gamma_init must be positive")
        self.bank: SwitchBank | None = None
        self._curvature_inputs: list[torch.Tensor] = []
        self._epoch_images = 0
        self.rounds_done = 0
        self.updates: list[dict[str, Any]] = []
        self.last_derivation: dict[str, Any] | None = None

    # ---- construction ----------------------------------------------------------------------
    def build_architecture(self, supernet: nn.Module) -> nn.Module:
        self.bank = SwitchBank(supernet.topologies(), init=1.0, gamma_init=float(self.config["gamma_init"]))
        return self.bank

    def extra_weight_groups(self) -> list[dict]:
        return [{"params": self.bank.switch_parameters(), "weight_decay": 0.0}]

    @property
    def architectural_weights(self) -> list[nn.Parameter]:
        """NASLib's name for the architecture parameters (here: the switches)."""
        return self.bank.switch_parameters()

    # ---- training ------------------------------------------------------------------------------
    def new_epoch(self, epoch: int) -> None:
        self._pending_update()
        super().new_epoch(epoch)
        self._epoch_images = 0

    def step(self, data_train, data_val=None):
        x, y = data_train
        joint = not self.is_warmup(self.epoch)
        penalty = None
        if joint:
            c = self.config
            penalty = lambda: self.bank.penalty(float(c["lambda_origin"]), float(c["lambda_child"]))
        logits, loss = self.weight_step(x, y, extra_loss=penalty)
        self._epoch_images += int(x.shape[0])
        if joint:  # the round's last batches, which span its epochs when one has fewer steps
            self._curvature_inputs.append(x.detach())
            del self._curvature_inputs[: -int(self.config["curvature_batches"])]
        logits_val = val_loss = None
        if data_val is not None:  # NASLib's trainer logs validation statistics: evaluate only
            with torch.no_grad():
                logits_val = self.model(data_val[0])
                val_loss = F.cross_entropy(logits_val, data_val[1])
        return logits, logits_val, loss, val_loss

    def before_weight_update(self) -> None:
        if self.is_warmup(self.epoch):
            for p in self.bank.switch_parameters():
                p.grad = None  # weight-only training: SGD skips parameters without gradient

    def after_weight_update(self) -> None:
        if self.rounds_done:  # masks only change at architecture updates
            self.bank.enforce_masks(self.op_optimizer.state)

    def end_epoch(self, epoch: int) -> None:
        if self.ends_round(epoch) and self.rounds_done <= self._round_of(epoch):
            self.architecture_update()

    def after_training(self) -> None:
        self._pending_update()

    def _round_of(self, epoch: int) -> int:
        return (epoch - int(self.config["warmup_epochs"])) // int(self.config["epochs"])

    def _pending_update(self) -> None:
        if self.epoch >= 0 and self.ends_round(self.epoch) and self.rounds_done <= self._round_of(self.epoch):
            self.architecture_update()

    # ---- the architecture update ------------------------------------------------------------------
    def compute_curvature(self, inputs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{cell_type: (H_parent, H_child)}`` on the given input batches."""
        self.model.train()
        total = CurvatureResult()
        for x in inputs:
            total.add(gauss_newton_diagonal(self.model, x))
        reduction = self.config["curvature_reduction"]
        by_type = curvature_by_type(self.bank, total.sums, "sum" if reduction == "sum" else "mean", total.num_samples)
        if reduction == "dataset":
            # the batches may span the round's epochs: the search set is still one epoch's images
            # (none counted only in checkpoints of versions that did not record them)
            n = self._epoch_images or total.num_samples
            by_type = {name: (hp * n, hc * n) for name, (hp, hc) in by_type.items()}
        return by_type

    def architecture_update(self) -> dict[str, Any]:
        """Curvature, HARD update, derivation and (between rounds) pruning."""
        if not self._curvature_inputs:
            raise RuntimeError("BayesNAS: no training batch seen in this round; cannot compute the curvature")
        start = time.perf_counter()
        c = self.config
        curvature = self.compute_curvature(self._curvature_inputs)
        self.bank.update(curvature, float(c["lambda_origin"]), float(c["lambda_child"]))
        derivation = self.derive()
        final_round = self.rounds_done + 1 >= int(c["rounds"])
        pruned = {}
        if not final_round:
            for name, info in derivation["per_type"].items():
                keep_c, live = info["keep_child"], info["live"]
                kept = {(d.edge, d.op) for d in info["decisions"] if d.kept}
                ops = self.bank.topologies[name].ops
                keep_parent = torch.tensor([live[e] or (e, None) in kept for e in range(len(live))])
                keep_child = torch.tensor([[keep_c[e][k] or (e, ops[k]) in kept for k in range(len(ops))]
                                           for e in range(len(live))])
                self.bank.prune(name, keep_parent, keep_child)
                pruned[name] = int((~keep_child).sum())
            self.bank.enforce_masks(self.op_optimizer.state)
        self._curvature_inputs = []
        self.rounds_done += 1
        self.last_derivation = derivation
        record = {
            "round": self.rounds_done,
            "epoch": self.epoch,
            "time_s": time.perf_counter() - start,
            "architecture": derivation["architecture_json"],
            "repair_fraction": derivation["repair_fraction"],
            "entropy_survivors": {name: int(sum(sum(row) for row in info["keep_child"]))
                                  for name, info in derivation["per_type"].items()},
            "pruned_ops": pruned,
            "mean_curvature": {name: [float(hp.mean()), float(hc.mean())] for name, (hp, hc) in curvature.items()},
        }
        self.updates.append(record)
        return record

    # ---- derivation ---------------------------------------------------------------------------
    def derive(self) -> dict[str, Any]:
        """Derive the architecture from the current gammas (see :mod:`.derive`).

        The gammas are every group's own (:meth:`SwitchBank.gammas`: zero only for switches
        masked in an earlier round); the derivation recomputes the entropy survivors and the
        node dependencies from them, exactly as the update did, and its repair ranks by them.
        """
        per_type: dict[str, dict[str, Any]] = {}
        net = self.model.net
        for name, topo in self.bank.topologies.items():
            gp, gc = self.bank.gammas(name)
            keep_c, live = derive.entropy_stage(gp, gc, topo.edges, topo.inputs, topo.outputs)
            per_type[name] = {"keep_child": keep_c, "live": live}
        if self.space_name == "nasbench201":
            (name, topo), = self.bank.topologies.items()
            gp, gc = self.bank.gammas(name)
            child_ops = [nb201.OPS.index(op) for op in topo.ops]
            cell, decisions = derive.derive_nb201(gp, gc, child_ops=child_ops)
            per_type[name]["decisions"] = decisions
            architecture, architecture_json = cell, nb201.to_string(cell)
        elif self.space_name == "darts":
            cells = {}
            for name, topo in self.bank.topologies.items():
                gp, gc = self.bank.gammas(name)
                edges, concat, decisions = derive.derive_darts_cell(gp, gc, topo.ops, steps=net.steps,
                                                                     outputs=topo.outputs)
                cells[name] = (edges, concat)
                per_type[name]["decisions"] = decisions
            normal = cells.get("normal") or cells["reduce"]
            reduce = cells.get("reduce") or cells["normal"]
            architecture = Genotype(tuple(normal[0]), tuple(normal[1]), tuple(reduce[0]), tuple(reduce[1]))
            architecture_json = architecture.to_json()
        else:
            raise UserError(f"BayesNAS cannot derive architectures of search space {self.space_name!r}")
        for name, info in per_type.items():
            self._mark_masked(name, info["decisions"])
        all_decisions = [d for info in per_type.values() for d in info["decisions"]]
        return {
            "architecture": architecture,
            "architecture_json": architecture_json,
            "per_type": per_type,
            "repair_fraction": derive.repair_fraction(all_decisions),
        }

    def _mark_masked(self, cell_type: str, decisions) -> None:
        """Switches masked in an earlier round have gamma 0 now: say why they are out."""
        op_index = {op: k for k, op in enumerate(self.bank.topologies[cell_type].ops)}
        mp = self.bank.state("mask_parent", cell_type).tolist()
        mc = self.bank.state("mask_child", cell_type).tolist()
        for d in decisions:
            masked = not mp[d.edge] if d.op is None else not (mp[d.edge] and mc[d.edge][op_index[d.op]])
            if masked and not d.kept and d.decision == derive.ENTROPY:
                d.reason = "pruned in an earlier round"

    def get_final_architecture(self):
        self._pending_update()
        if self.last_derivation is None:
            raise RuntimeError("BayesNAS: no architecture update has run yet")
        return self.last_derivation["architecture"]

    # ---- results --------------------------------------------------------------------------------
    def relevance(self) -> list[dict[str, Any]]:
        """Per switch group of the last update: gamma, C (per cell), omega, entropy, decision."""
        if self.last_derivation is None:
            return []
        entries = []
        for name, info in self.last_derivation["per_type"].items():
            topo = self.bank.topologies[name]
            op_index = {op: k for k, op in enumerate(topo.ops)}
            for d in info["decisions"]:
                src, dst = topo.edges[d.edge]
                if d.op is None:
                    cs = self.bank.state("C_parent", name)[:, d.edge]
                    omega = self.bank.state("omega_parent", name)[d.edge]
                else:
                    cs = self.bank.state("C_child", name)[:, d.edge, op_index[d.op]]
                    omega = self.bank.state("omega_child", name)[d.edge, op_index[d.op]]
                entry = {
                    "cell_type": name,
                    "edge": d.edge,
                    "source": src,
                    "target": dst,
                    "op": d.op,
                    "switch": "parent" if d.op is None else "child",
                    "gamma": finite_or_none(d.gamma),
                    "C": [finite_or_none(v) for v in cs],
                    "omega": finite_or_none(omega),
                    "entropy": finite_or_none(d.entropy),
                    "kept": d.kept,
                    "decision": d.decision,
                    "reason": d.reason,
                }
                entries.append(entry)
        return entries

    def result_extras(self) -> dict[str, Any]:
        return {
            "relevance": self.relevance(),
            "repair_fraction": None if self.last_derivation is None else self.last_derivation["repair_fraction"],
            "architecture_updates": [dict(u) for u in self.updates],  # callers pop fields
        }

    # ---- resume -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "epoch_images": self._epoch_images,
            "curvature_inputs": list(self._curvature_inputs),
            "rounds_done": self.rounds_done,
            "updates": list(self.updates),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._epoch_images = int(state.get("epoch_images", 0))
        # checkpoints load onto the CPU; the batches must be where the (restored) model is
        device = next(self.model.parameters()).device
        self._curvature_inputs = [x.to(device) for x in state.get("curvature_inputs", [])]
        self.rounds_done = int(state.get("rounds_done", 0))
        self.updates = list(state.get("updates", []))
        if self.rounds_done:
            self.last_derivation = self.derive()
