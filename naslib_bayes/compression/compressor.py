"""The compression schedule: sparse training with HARD updates, pruning, slimming, fine-tuning.

:func:`compress` takes an ordinary CNN (a chain, see :mod:`.trace`) and

1. puts BayesNAS switches on its units (:class:`~.switched.SwitchedNetwork`);
2. trains weights and switches for ``epochs - finetune_epochs`` epochs (the first
   ``warmup_epochs`` on the cross-entropy alone, then with the re-weighted group-lasso term
   ``lambda * sum omega |s|``; switches get no weight decay);
3. every ``update_every`` epochs after the warm-up, and after the last sparse epoch, computes
   (after moving each unit's scale into its switches, see ``rebalance``) the diagonal
   Gauss-Newton curvature of the switches on the last ``curvature_batches``
   training batches, applies the HARD update and the entropy criterion, and physically removes
   the pruned units (dependencies and bias folding of :mod:`.prune`; training goes on with the
   smaller network and a fresh optimizer);
4. fine-tunes the pruned network for ``finetune_epochs`` epochs on the cross-entropy alone,
   or with ``distill`` > 0 on a mix of it and the soft targets of a teacher (the trained dense
   network), (switches stay trainable, without the sparsity term) and folds the switches into the
   weights: the result is a plain dense network. With a parameter budget (``max_params``) the
   sparse phase ends at the first update that meets it and fine-tuning takes every epoch left.

:func:`train_dense` trains the uncompressed network with the same optimizer, batch size and
augmentation for the same total number of epochs: the fair baseline. Its learning rate is
constant, then decays to zero on a cosine over the last ``finetune_epochs`` epochs; the
compression's decays over its retraining epochs, which with a parameter budget are every epoch
left once the budget is met (so usually more than ``finetune_epochs``). No step looks at the
test split.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes.compression.config import CompressionConfig
from naslib_bayes.compression.prune import plan_pruning, slim
from naslib_bayes.compression.resume import StageCheckpoint, network_state, restore_network
from naslib_bayes.compression.switched import LayerUpdate, SwitchedNetwork
from naslib_bayes.compression.trace import analyse_chain, trace_chain
from naslib_bayes.data import ImageDataset, batches
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.bayesnas.curvature import CurvatureResult, gauss_newton_diagonal
from naslib_bayes.search_spaces.counting import count_flops, count_parameters
from naslib_bayes.training.checkpoint import derived_seed, random_state, restore_random_state

logger = logging.getLogger(__name__)


@dataclass
class CompressionOutcome:
    """What :func:`compress` returns.

    Attributes:
        model: the compressed dense network (``nn.Sequential``, switches folded in), in eval mode.
        switched: the final switched network (before folding), for inspection.
        layer_names: names of the conv/linear layers in the original model.
        widths_before, widths_after: units per layer.
        inputs_before, inputs_after: input features (or channels) of the first layer.
        params_before/after, flops_before/after: parameters of the layers the forward pass uses
            (a module the model holds but never calls is left out), FLOPs per sample
            (multiply-accumulates of the conv and linear layers).
        history: one entry per HARD update and one per epoch.
        masked_max_abs_diff: largest |output difference| (eval mode) between the slimmed network
            of the last pruning and the masked network it was derived from, or between the final
            switched network and its switch-free dense version, whichever is larger.
        budget_met: with ``max_params``, whether the compressed network is within it (pruning
            can end first: a lambda too small for the sparse epochs given); None without.
    """

    model: nn.Sequential
    switched: SwitchedNetwork
    layer_names: list[str]
    widths_before: list[int]
    widths_after: list[int]
    inputs_before: int
    inputs_after: int
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    history: list[dict[str, Any]] = field(default_factory=list)
    masked_max_abs_diff: float | None = None
    wall_time_s: float = 0.0
    budget_met: bool | None = None


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype ``model`` computes in: its first floating parameter's (float32 without one).

    Datasets hold float32 images; each batch is cast to this, so a float64 model trains and is
    evaluated in float64 (a float32 model's batches stay the very same tensors).
    """
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent (eval mode; the model's mode is restored)."""
    training = model.training
    model.eval()
    correct, dtype = 0, input_dtype(model)
    with torch.no_grad():
        for x, y in batches(dataset, batch_size, None, shuffle=False):
            correct += int((model(x.to(dtype)).argmax(dim=1) == y).sum())
    model.train(training)
    return 100.0 * correct / max(len(dataset), 1)


def _optimizer(weights: Sequence[nn.Parameter], switches: Sequence[nn.Parameter], cfg: CompressionConfig,
               lr: float) -> torch.optim.Optimizer:
    groups = [{"params": list(weights), "weight_decay": cfg.weight_decay}]
    if switches:
        groups.append({"params": list(switches), "weight_decay": 0.0})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def soft_target_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float,
                     temperature: float) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(teacher/T) || softmax(logits/T))``, averaged over the batch.

    The ``T^2`` keeps the soft term's gradients on the scale of the cross-entropy's as ``T``
    changes (Hinton et al., 2015). Args: logits, teacher_logits (B, K). Returns a scalar.
    """
    _check_teacher_outputs(teacher_logits.shape[1:], logits.shape[1:])  # else a KL-divergence traceback
    kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * kl


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """``(1 - alpha) * CE(logits, labels) + alpha * T^2 * KL(softmax(teacher/T) || softmax(logits/T))``.

    Args: logits, teacher_logits (B, K); labels (B,). Returns a scalar.
    """
    hard = F.cross_entropy(logits, labels)
    return (1.0 - alpha) * hard + soft_target_loss(logits, teacher_logits, alpha, temperature)


def mixup(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image blended with a random other image of the batch, weight uniform in [0, 1].

    Args: x (B, ...). Returns (B, ...): ``w_i * x_i + (1 - w_i) * x_perm(i)``.
    """
    partner = torch.randperm(len(x), generator=generator)
    weight = torch.rand((len(x),) + (1,) * (x.dim() - 1), generator=generator)
    return weight * x + (1.0 - weight) * x[partner]


def _mixup_distillation_step(model: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             cfg: CompressionConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, cross-entropy): the cross-entropy on the batch, the tempered KL on its mixup images.

    One forward pass over the batch and its mixup images together (2B images; a BatchNorm layer
    normalises them as one batch). Args: x (B, ...), y (B,).
    """
    mixed = mixup(x, generator)
    logits, mixed_logits = model(torch.cat([x, mixed])).split(len(x))
    with torch.no_grad():
        teacher_logits = teacher(mixed.to(input_dtype(teacher))).to(mixed_logits.dtype)
    hard = F.cross_entropy(logits, y)
    return (1.0 - cfg.distill) * hard + soft_target_loss(mixed_logits, teacher_logits, cfg.distill,
                                                         cfg.distill_temperature), hard


def _batchnorm_sees_one_value(model: nn.Module, input_shape: Sequence[int]) -> bool:
    """Whether a BatchNorm of ``model`` gets one value per channel from one image (a 1x1 map or
    a flat feature): training on a batch of one image then fails. Modes are restored."""
    flags: list[bool] = []
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    handles = [m.register_forward_pre_hook(lambda _, args: flags.append(args[0][0, 0].numel() == 1)) for m in norms]
    modes = {m: m.training for m in model.modules()}
    ref = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape), dtype=ref.dtype, device=ref.device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return any(flags)


def _output_shape(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of ``model``'s output for one image (eval mode, no gradient; modes are restored)."""
    modes = {m: m.training for m in model.modules()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            image = torch.zeros((1,) + tuple(input_shape), dtype=input_dtype(model), device=device)
            return tuple(model(image).shape[1:])
    finally:
        for module, training in modes.items():
            module.training = training


def check_logits(output_shape: Sequence[int], data: ImageDataset) -> None:
    """Refuse a network that does not give a logit per class of ``data`` for an image: the
    cross-entropy would stop at the first step with an error that names neither."""
    if len(output_shape) != 1 or output_shape[0] < data.num_classes:
        raise UserError(f"the network gives outputs of shape {tuple(output_shape)} per image, but the training "
                        f"data have {data.num_classes} classes: its last layer must give one logit per class, "
                        f"shape ({data.num_classes},)")


def _check_teacher_outputs(teacher_shape: Sequence[int], student_shape: Sequence[int]) -> None:
    if tuple(teacher_shape) != tuple(student_shape):
        raise UserError(f"the teacher gives outputs of shape {tuple(teacher_shape)} per image, the network being "
                        f"compressed {tuple(student_shape)}: distillation needs the same")


def check_batch_size(model: nn.Module, data: ImageDataset, batch_size: int) -> None:
    """Refuse batches of one image when a BatchNorm of ``model`` gets one value per channel from
    an image: it cannot normalise them in training, so every step would fail."""
    if batch_size == 1 and _batchnorm_sees_one_value(model, data.image_shape):
        raise UserError("batch_size 1 (--batch-size): a BatchNorm of the network gets one value per channel "
                        "from an image, which it cannot normalise in training; use batches of 2 or more images")


def _lone_image_sits_out(model: nn.Module, data: ImageDataset, batch_size: int) -> bool:
    """Whether each epoch drops its last batch: one image, which a BatchNorm of ``model`` cannot
    normalise in training (shuffling makes it a different image every epoch). Batches of one
    image alone are refused (:func:`check_batch_size`)."""
    check_batch_size(model, data, batch_size)
    return len(data) % batch_size == 1 and _batchnorm_sees_one_value(model, data.image_shape)


# The streams of the dropout masks (see _dropout_stream): the dense baseline's, the compression's
# training and its curvature passes (in training mode, as the loss they approximate).
DENSE_DROPOUT, COMPRESSION_DROPOUT, CURVATURE_DROPOUT = 0, 1, 2


@contextlib.contextmanager
def _dropout_stream(seed: int, stage: int, epoch: int):
    """Dropout masks of one epoch drawn from a stream of the run's own.

    Dropout draws from torch's global CPU generator; seeding it (inside a fork that gives the
    caller's state back) from ``(seed, stage, epoch)`` makes a run repeat itself whatever the
    caller drew before, a resumed epoch draw what the uninterrupted one drew, and the dense
    baseline leave the compression's draws alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(derived_seed(seed, stage, epoch))
        yield


def _train_epoch(model: nn.Module, data: ImageDataset, opt: torch.optim.Optimizer, cfg: CompressionConfig,
                 generator: torch.Generator, augment, extra_loss: Callable[[], torch.Tensor] | None = None,
                 keep_last: int = 0, after_step: Callable[[float], None] | None = None,
                 teacher: nn.Module | None = None, drop_last: bool = False) -> tuple[float, list[torch.Tensor]]:
    """One epoch; returns the mean cross-entropy and the last ``keep_last`` input batches.

    With a ``teacher`` (in eval mode) the loss is :func:`distillation_loss` with the config's
    ``distill`` weight and temperature, on the same augmented batch. ``drop_last``: leave out
    the last batch when it is smaller than the others.
    """
    model.train()
    total, count, kept = 0.0, 0, []
    lr, dtype = opt.param_groups[0]["lr"], input_dtype(model)
    for x, y in batches(data, cfg.batch_size, generator, shuffle=True, drop_last=drop_last, augment=augment):
        x = x.to(dtype)
        opt.zero_grad(set_to_none=True)
        if teacher is not None and cfg.distill_mixup:
            loss, hard = _mixup_distillation_step(model, teacher, x, y, cfg, generator)
        else:
            logits = model(x)
            loss = hard = F.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x.to(input_dtype(teacher))).to(logits.dtype)
                loss = distillation_loss(logits, teacher_logits, y, cfg.distill, cfg.distill_temperature)
        total += float(hard.detach()) * len(y)
        count += len(y)
        if extra_loss is not None:
            loss = loss + extra_loss()
        if not torch.isfinite(loss):  # say so instead of writing NaN accuracies and weights
            clip = f"gradients clipped to norm {cfg.grad_clip:g}" if cfg.grad_clip > 0 else "no gradient clipping"
            raise UserError(f"training diverged (loss {float(loss.detach())}) at learning rate {lr:g} with {clip}: "
                            "use a lower lr or a smaller grad_clip (--lr, --grad-clip)")
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], cfg.grad_clip)
        opt.step()
        if after_step is not None:
            after_step(lr)
        if keep_last:
            kept.append(x.detach())
            del kept[:-keep_last]
    return total / max(count, 1), kept


def model_costs(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """(parameters, FLOPs per sample) with the project's counter (FLOPs = conv + linear MACs)."""
    return count_parameters(model), count_flops(model, input_shape)


def train_dense(model: nn.Module, train: ImageDataset, cfg: CompressionConfig, seed: int, augment=None,
                val: ImageDataset | None = None, log: Callable[[str], None] | None = None,
                checkpoint: StageCheckpoint | None = None) -> list[dict[str, Any]]:
    """Train ``model`` in place as the dense baseline; returns per-epoch records.

    With a ``checkpoint`` the state is saved (stage ``dense``) after every epoch, and a saved
    state is continued: a resumed run trains exactly as an uninterrupted one.
    """
    check_logits(_output_shape(model, train.image_shape), train)
    generator = torch.Generator().manual_seed(int(seed) + 1)
    opt = _optimizer(model.parameters(), [], cfg, cfg.lr_at(0))
    history: list[dict[str, Any]] = []
    drop_last = _lone_image_sits_out(model, train, cfg.batch_size)
    saved = checkpoint.get("dense") if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        restore_random_state(generator, saved["random"])
        history = saved["history"]
    for epoch in range(len(history), cfg.epochs):
        _set_lr(opt, cfg.lr_at(epoch))
        with _dropout_stream(seed, DENSE_DROPOUT, epoch):
            loss, _ = _train_epoch(model, train, opt, cfg, generator, augment, drop_last=drop_last)
        history.append(_epoch_record(model, "dense", epoch, loss, cfg, val, log))
        if checkpoint is not None:
            checkpoint.put("dense", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "random": random_state(generator), "history": history})
    model.eval()
    return history


def _curvature(net: SwitchedNetwork, inputs: Sequence[torch.Tensor], reduction: str):
    net.train()
    total = CurvatureResult()
    for x in inputs:
        total.add(gauss_newton_diagonal(net, x))
    return net.curvature(total, reduction)


def compress(model: nn.Module, train: ImageDataset, cfg: CompressionConfig, seed: int, augment=None,
             val: ImageDataset | None = None, log: Callable[[str], None] | None = None,
             teacher: nn.Module | None = None, checkpoint: StageCheckpoint | None = None) -> CompressionOutcome:
    """Compress ``model`` (left unchanged) on ``train``; see the module docstring for the schedule.

    Args:
        model: a chain of supported modules (see :mod:`.trace`), already initialised.
        train: training images (never the test split).
        cfg: the schedule.
        seed: seeds the batch order, augmentation and dropout masks (from streams of the run's
            own: the caller's global random state is neither used nor changed).
        augment: a batch augmentation (e.g. :func:`naslib_bayes.data.default_augment`) or None.
        val: optional validation images, only for the history (no decision depends on them).
        log: receives one progress line per epoch and per update.
        teacher: the network whose outputs the retraining distils (``cfg.distill`` > 0), e.g.
            the dense baseline trained by :func:`train_dense`; left unchanged.
        checkpoint: saves the run's state (stage ``compress``: the switched network, optimizer,
            random state, history) after every epoch and continues from a saved state; a resumed
            run gives the same network as an uninterrupted one.
    """
    teacher = _distillation_teacher(cfg, teacher)
    run = _CompressionRun(model, train, cfg, seed, augment, val, log, teacher, checkpoint)
    run.restore()
    run.sparse_phase()
    run.switch_to_retraining()
    run.retraining_phase()
    return run.outcome()


def _distillation_teacher(cfg: CompressionConfig, teacher: nn.Module | None) -> nn.Module | None:
    """The teacher the run distils from, in eval mode, or None when ``cfg.distill`` is 0.

    A teacher in training mode is copied (BatchNorm and dropout as at inference), so the caller's
    network keeps its mode. Raises :class:`UserError` when distillation has no teacher.
    """
    if cfg.distill > 0 and teacher is None:
        raise UserError(f"distill={cfg.distill:g} needs a teacher network (e.g. the trained dense baseline)")
    if cfg.distill == 0:
        return None
    if teacher.training:
        return copy.deepcopy(teacher).eval()  # BatchNorm and dropout as at inference, caller's mode kept
    return teacher


def _refuse_fresh_weights_for_frozen_layers(chain: Sequence[tuple[str, nn.Module]], cfg: CompressionConfig) -> None:
    """With ``retrain="scratch"`` every module gets fresh weights; a layer the user froze
    (``requires_grad=False``) would keep random weights that never train, so it is refused."""
    if cfg.retrain != "scratch":
        return
    for name, module in chain:
        if any(not p.requires_grad for p in module.parameters()):
            raise UserError(f"retrain='scratch' gives every layer fresh weights, but layer '{name}' "
                            f"({type(module).__name__}) is frozen (requires_grad=False): its fresh weights would "
                            "never train; unfreeze it or use retrain='finetune'")


class _CompressionRun:
    """The state of one :func:`compress` run, advanced phase by phase.

    Holds the switched network, its optimizer, the batch-order generator, the history and the
    epoch retraining starts at (``finetune_start``); ``phase`` and ``first_epoch`` say where the
    run stands (``"sparse"`` or ``"finetune"``, and the next epoch to train), which a restored
    checkpoint can move past the start.
    """

    def __init__(self, model: nn.Module, train: ImageDataset, cfg: CompressionConfig, seed: int, augment,
                 val: ImageDataset | None, log: Callable[[str], None] | None, teacher: nn.Module | None,
                 checkpoint: StageCheckpoint | None):
        self.start = time.perf_counter()
        self.train, self.cfg, self.seed, self.augment, self.val, self.log = train, cfg, seed, augment, val, log
        self.teacher, self.checkpoint = teacher, checkpoint
        self.input_shape = tuple(train.image_shape)
        chain = trace_chain(model)
        _refuse_fresh_weights_for_frozen_layers(chain, cfg)
        info = analyse_chain(chain, self.input_shape)
        check_logits(info.output_shape, train)
        self.layer_names = [chain[l.step][0] for l in info.layers]
        # the chain's parameters: a module the model holds but never calls is not compressed (nor counted after)
        self.params_before = count_parameters(nn.ModuleList(dict.fromkeys(module for _, module in chain)))
        self.flops_before = count_flops(model, self.input_shape)
        self.net = SwitchedNetwork(chain, self.input_shape, gamma_init=cfg.gamma_init)
        self.widths_before, self.inputs_before = self.net.widths(), self.net.info.layers[0].in_groups
        self.drop_last = _lone_image_sits_out(self.net, train, cfg.batch_size)  # pruning keeps every BatchNorm
        self.generator = torch.Generator().manual_seed(int(seed) + 1)
        self.history: list[dict[str, Any]] = []
        # cost-scaled lambdas keep the reference of the uncompressed network: as layers shrink, the
        # units left in them get cheaper and the pressure on them eases.
        self.reference_cost = None if cfg.lam_scale == "none" else self.net.mean_unit_cost()
        self.power = 0.5 if cfg.lam_scale == "sqrt_cost" else 1.0
        self.finetune_start = cfg.sparse_epochs  # earlier when the parameter budget is met sooner
        self.params_limit = None if cfg.max_params is None else cfg.max_params * self.params_before
        self.phase, self.first_epoch = "sparse", 0
        self.opt = self._new_optimizer(0)

    def _new_optimizer(self, epoch: int) -> torch.optim.Optimizer:
        """A fresh optimizer for the current network, at the learning rate of ``epoch``."""
        return _optimizer(self.net.weight_parameters(), self.net.switch_parameters(), self.cfg, self.cfg.lr_at(epoch))

    def restore(self) -> None:
        """Continue from the checkpoint's ``compress`` stage, if one was saved."""
        saved = self.checkpoint.get("compress") if self.checkpoint is not None else None
        if saved is None:
            return
        self.net = restore_network(saved["net"], self.net.child[0].device)
        self.history, self.finetune_start = saved["history"], saved["finetune_start"]
        self.phase, self.first_epoch = saved["phase"], saved["epoch"]
        restore_random_state(self.generator, saved["random"])
        self.start -= saved["elapsed_s"]
        self.opt = self._new_optimizer(self.first_epoch)
        self.opt.load_state_dict(saved["optimizer"])

    def _save(self, at_phase: str, next_epoch: int) -> None:
        """Checkpoint the run (stage ``compress``) to continue at ``next_epoch`` of ``at_phase``."""
        if self.checkpoint is not None:
            self.checkpoint.put("compress", {
                "phase": at_phase, "epoch": next_epoch, "net": network_state(self.net), "optimizer": self.opt.state_dict(),
                "random": random_state(self.generator), "history": self.history,
                "finetune_start": self.finetune_start, "elapsed_s": time.perf_counter() - self.start})

    def sparse_phase(self) -> None:
        """Train under the sparsity term with HARD updates and pruning, checkpointing every epoch.

        Ends after the last sparse epoch, or at the first update within the parameter budget.
        """
        if self.phase != "sparse":
            return
        for epoch in range(self.first_epoch, self.cfg.sparse_epochs):
            if self._sparse_epoch(epoch):
                break  # unsaved: the switch to retraining saves the state that follows
            self._save("sparse", epoch + 1)

    def _sparse_epoch(self, epoch: int) -> bool:
        """One epoch of the sparse phase (warm-up: no sparsity term), then the HARD update when one is due.

        Returns whether that update met the parameter budget.
        """
        cfg, net = self.cfg, self.net
        _set_lr(self.opt, cfg.lr_at(epoch))
        sparse = epoch >= cfg.warmup_epochs
        for p in net.switch_parameters():
            p.requires_grad_(sparse)
        penalty = prox = None
        lams = net.layer_lambdas(cfg.lam, self.reference_cost, self.power)
        if sparse and cfg.proximal:
            prox = lambda lr: net.proximal_step(([lr * v for v in lams[0]], [lr * v for v in lams[1]]))  # noqa: E731
        elif sparse:
            penalty = lambda: net.penalty(lams)  # noqa: E731
        with _dropout_stream(self.seed, COMPRESSION_DROPOUT, epoch):
            loss, last = _train_epoch(net, self.train, self.opt, cfg, self.generator, self.augment, penalty,
                                      keep_last=cfg.curvature_batches, after_step=prox,
                                      teacher=self.teacher if cfg.distill_sparse else None, drop_last=self.drop_last)
        self.history.append(_epoch_record(net, "sparse" if sparse else "warmup", epoch, loss, cfg, self.val, self.log,
                                          widths=net.widths()))
        final = epoch == cfg.sparse_epochs - 1
        if sparse and (final or (epoch + 1 - cfg.warmup_epochs) % cfg.update_every == 0):
            return self._update(epoch, last, lams)
        return False

    def _update(self, epoch: int, last: Sequence[torch.Tensor], lams) -> bool:
        """The HARD update and pruning after ``epoch`` (the network and optimizer are replaced).

        Returns whether the pruned network is within the parameter budget; if so, retraining
        starts at the next epoch.
        """
        with _dropout_stream(self.seed, CURVATURE_DROPOUT, epoch):
            self.net, entry = _update_and_prune(self.net, last, lams, self.cfg, self.params_limit, epoch)
        self.opt = self._new_optimizer(epoch + 1)
        self.history.append(entry)
        if self.log:
            self.log(f"update {entry['update']} after epoch {epoch + 1}: widths {entry['widths']} "
                     f"inputs {entry['inputs']} params {entry['params']}")
        if self.params_limit is None or entry["params"] > self.params_limit:
            return False
        self.finetune_start = epoch + 1
        if self.log:
            self.log(f"within the parameter budget ({self.cfg.max_params:g}): fine-tuning from epoch {epoch + 2}")
        return True

    def switch_to_retraining(self) -> None:
        """Leave the sparse phase: fresh weights with ``retrain="scratch"``, trainable switches, a
        fresh optimizer; checkpointed. Nothing to do for a run restored in retraining."""
        if self.phase != "sparse":
            return
        # Fine-tuning keeps the switches (trainable, no sparsity term): folding them first would
        # rescale the weights and with them the effective learning rate of every unit.
        if self.cfg.retrain == "scratch":
            self.net.reinitialise(self.seed)
        for p in self.net.switch_parameters():
            p.requires_grad_(True)
        self.opt = self._new_optimizer(self.finetune_start)
        self.phase, self.first_epoch = "finetune", self.finetune_start
        self._save("finetune", self.first_epoch)

    def retraining_phase(self) -> None:
        """Retrain (fine-tune, or distil from the teacher) every epoch left, checkpointing each."""
        cfg = self.cfg
        for epoch in range(self.first_epoch, cfg.epochs):
            _set_lr(self.opt, cfg.lr_at(epoch, self.finetune_start))
            with _dropout_stream(self.seed, COMPRESSION_DROPOUT, epoch):
                loss, _ = _train_epoch(self.net, self.train, self.opt, cfg, self.generator, self.augment,
                                       teacher=self.teacher, drop_last=self.drop_last)
            self.history.append(_epoch_record(self.net, "finetune", epoch, loss, cfg, self.val, self.log,
                                              finetune_start=self.finetune_start))
            self._save("finetune", epoch + 1)

    def _warn_constant_output(self) -> None:
        """Say why a compressed network answers every image alike: the units ``min_units`` kept in
        some layer have switches of 0 (too large a lambda zeroed them all), so its accuracy is chance's."""
        dead = [name for name, switch in zip(self.layer_names, self.net.parent) if not bool(switch.detach().any())]
        where = f": every unit kept in layer '{dead[0]}' has a switch of 0" if dead else ""
        logger.warning("the compressed network gives the same output for every image%s; lambda %g pruned too "
                       "much (a smaller lambda, or a larger min_units)", where, self.cfg.lam)

    def outcome(self) -> CompressionOutcome:
        """Fold the switches into a dense network, check the folding and the budget, and report."""
        net = self.net
        dense = net.to_dense()
        with torch.no_grad():  # folding the switches into the weights changes nothing
            probe = self.train.images[:256].to(input_dtype(net))
            dense_out = dense.eval()(probe)
            fold_diff = float((dense_out - net.eval()(probe)).abs().max())
        if len(probe) > 1 and bool((dense_out == dense_out[:1]).all()):
            self._warn_constant_output()
        diffs = [h["masked_max_abs_diff"] for h in self.history if h["phase"] == "update"]
        masked_diff = max([fold_diff] + diffs[-1:])
        dense.eval()
        params_after, flops_after = model_costs(dense, self.input_shape)
        budget_met = None if self.params_limit is None else params_after <= self.params_limit
        if budget_met is False:
            logger.warning("the parameter budget was not reached: %d of %d parameters kept (%.1f%%, --max-params %g); "
                           "a larger lambda or more epochs prune further", params_after, self.params_before,
                           100.0 * params_after / self.params_before, self.cfg.max_params)
        return CompressionOutcome(
            model=dense, switched=net, layer_names=self.layer_names, widths_before=self.widths_before,
            widths_after=net.widths(), inputs_before=self.inputs_before, inputs_after=net.info.layers[0].in_groups,
            params_before=self.params_before, params_after=params_after, flops_before=self.flops_before,
            flops_after=flops_after, history=self.history, masked_max_abs_diff=masked_diff,
            wall_time_s=time.perf_counter() - self.start, budget_met=budget_met,
        )


def _update_and_prune(net: SwitchedNetwork, last: Sequence[torch.Tensor], lams, cfg: CompressionConfig,
                      params_limit: float | None, epoch: int) -> tuple[SwitchedNetwork, dict[str, Any]]:
    """One HARD update after ``epoch``: curvature on the ``last`` batches, entropy criterion,
    pruning (cut back to the budget when it meets it) and slimming.

    Returns the slimmed network and the history entry of the update.
    """
    t0 = time.perf_counter()
    if cfg.rebalance:
        net.rebalance()
    hp, hc = _curvature(net, last, cfg.curvature_reduction)
    updates = net.hard_update(hp, hc, lams, cfg.min_units)  # the network is still the one lams were for
    pruning = _pruning(net, [u.keep_units for u in updates], [u.keep_inputs for u in updates])
    if params_limit is not None and pruning[-1] <= params_limit:
        pruning = prune_to_budget(net, updates, params_limit, pruning, revived=cfg.retrain == "scratch")
    keep_units, keep_inputs, plan, slimmed, params = pruning
    with torch.no_grad():  # the slimmed network computes what the masked one does
        probe = last[-1][:128]
        diff = float((slimmed.eval()(probe) - net.masked(keep_units, keep_inputs).eval()(probe)).abs().max())
    entry = {
        "epoch": epoch + 1, "phase": "update", "update": int(slimmed.num_updates),
        "widths": slimmed.widths(), "inputs": slimmed.info.layers[0].in_groups,
        "removed": plan.removed,
        "repaired": [u.repaired_units for u in updates[:-1]],
        "repaired_inputs": updates[0].repaired_inputs,
        "params": params, "masked_max_abs_diff": diff,
        "time_s": time.perf_counter() - t0,
    }
    return slimmed, entry


def _pruning(net: SwitchedNetwork, keep_units: list, keep_inputs: list) -> tuple:
    """``(keep_units, keep_inputs, plan, slimmed, params)``: the plan for the kept units and
    inputs, the network it slims ``net`` to, and that network's parameter count."""
    plan = plan_pruning(net, keep_units, keep_inputs)
    slimmed = slim(net, plan)
    return keep_units, keep_inputs, plan, slimmed, count_parameters(slimmed.to_dense())


def prune_to_budget(net: SwitchedNetwork, updates: Sequence[LayerUpdate], params_limit: float, full: tuple,
                    revived: bool = False):
    """The update's pruning, cut back to the least relevant units that bring the network within budget.

    One update can remove many units at once and overshoot a parameter budget by far. Of the
    units and inputs it removes, only the ``k`` with the smallest gamma (the least relevant by
    the entropy criterion's own measure) are removed, with the smallest ``k`` that meets the
    budget (bisection: removing more never adds parameters). ``full`` is the update's whole
    pruning, which meets the budget, as :func:`_pruning` gives it; the result has the same form.

    A unit whose parent and child switches are both exactly 0 (the lasso's proximal step leaves
    such units) gets no gradient in fine-tuning, nor do its weights: kept back, it would count
    parameters that compute nothing. Such units are removed even below the budget, unless
    retraining starts from fresh weights and switches (``revived``).
    """
    candidates = []  # (dead, gamma, kind, layer, index) of every unit and input the update removes
    for l, update in enumerate(updates):
        if update.keep_units is not None:
            candidates += [(not revived and _dead_unit(net, l, j), float(update.unit_scores[j]), "unit", l, j)
                           for j in torch.nonzero(~update.keep_units).flatten().tolist()]
    if updates[0].input_scores is not None:
        candidates += [(False, float(updates[0].input_scores[j]), "input", 0, j)
                       for j in torch.nonzero(~updates[0].keep_inputs).flatten().tolist()]
    candidates.sort(key=lambda c: (not c[0], c[1]))  # dead units first, then by gamma
    dead = sum(c[0] for c in candidates)

    def attempt(k: int):
        keep_units = [None if u.keep_units is None else torch.ones_like(u.keep_units) for u in updates]
        keep_inputs = [torch.ones_like(updates[0].keep_inputs)] + [None] * (len(updates) - 1)
        for _, _, kind, l, j in candidates[:k]:
            (keep_units if kind == "unit" else keep_inputs)[l][j] = False
        return _pruning(net, keep_units, keep_inputs)

    low, high, best = dead, len(candidates), full  # removing all of them (the full pruning) meets the budget
    if 0 < dead < len(candidates):
        trial = attempt(dead)
        if trial[-1] <= params_limit:
            return trial
    while high - low > 1:
        mid = (low + high) // 2
        trial = attempt(mid)
        if trial[-1] <= params_limit:
            high, best = mid, trial
        else:
            low = mid
    return best


def _dead_unit(net: SwitchedNetwork, l: int, j: int) -> bool:
    """Whether unit ``j`` of layer ``l`` has its parent switch and its consumers' child switch both at 0."""
    return bool(net.parent[l][j] == 0) and bool(net.child[l + 1][j] == 0)


def _epoch_record(net: nn.Module, phase: str, epoch: int, loss: float, cfg: CompressionConfig, val, log,
                  widths: list[int] | None = None, finetune_start: int | None = None) -> dict[str, Any]:
    """The history entry of one training epoch (validation accuracy when ``val`` is given), logged."""
    record: dict[str, Any] = {"epoch": epoch + 1, "phase": phase, "loss": loss, "lr": cfg.lr_at(epoch, finetune_start)}
    if widths is not None:
        record["widths"] = widths
    if val is not None:
        record["val_accuracy"] = evaluate(net, val)
    if log:
        log(f"{phase} epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f}"
            + (f" widths {widths}" if widths is not None else "")
            + (f" val {record['val_accuracy']:.2f}" if val is not None else ""))
    return record
