"""Hyper-parameters of compression (no torch import, so the command line stays light)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from naslib_bayes.errors import UserError

#: Names of the shipped models (:data:`naslib_bayes.compression.models.MODELS`).
MODEL_NAMES: tuple[str, ...] = ("lenet5", "lenet300", "vgg")
#: How lambda is scaled per switch group (see :class:`CompressionConfig`).
LAM_SCALES: tuple[str, ...] = ("none", "cost", "sqrt_cost")
#: How the pruned network is trained after the sparse phase (see :class:`CompressionConfig`).
RETRAIN_MODES: tuple[str, ...] = ("finetune", "scratch")


@dataclass
class CompressionConfig:
    """Hyper-parameters of :func:`compress` and :func:`train_dense`.

    Attributes:
        lam: sparsity weight lambda of every switch group (curvature is divided by it).
        epochs: total training epochs (sparse phase + fine-tuning); the dense baseline gets the same.
        finetune_epochs: epochs of plain fine-tuning of the compressed network.
        warmup_epochs: epochs at the start without the sparsity term and without updates.
        update_every: epochs between HARD updates (with pruning) in the sparse phase.
        curvature_batches: training batches (the last of the epoch) the curvature is computed on.
        curvature_reduction: ``sum`` (the curvature of the summed loss over those batches'
            samples) or ``mean`` (per sample), as the search's option of the same name.
        batch_size, optimizer (``sgd`` or ``adam``), lr, momentum, weight_decay: training of the
            weights (switches: same optimizer, no weight decay).
        min_units: every layer keeps at least this many units (and inputs).
        gamma_init: prior variance of every group before the first update.
        augment: use the dataset's default training augmentation.
        proximal: optimise the non-smooth sparsity term by a proximal step (soft-thresholding
            every switch by ``lr * lambda * omega`` after each optimizer step, which gives exact
            zeros) instead of adding its subgradient to the loss.
        rebalance: before every HARD update, move each unit's scale into its switches and bring
            every layer's switches to a root mean square of 1
            (:meth:`~naslib_bayes.compression.switched.SwitchedNetwork.rebalance`), so that the
            entropy criterion sees the units' relative scales rather than parametrization drift.
        lam_scale: ``none`` (every switch group gets ``lam``) or ``cost`` (a group gets ``lam``
            times the parameters its unit keeps alive, divided by the mean over all groups of
            the uncompressed network). The plain group lasso charges a LeNet-5 conv channel,
            which feeds 800 weights of every fc1 unit, as much as one fc1 neuron; when the aim is
            fewer parameters, the price of a switch should be what it keeps. ``sqrt_cost``: the
            square root of that ratio, the group lasso's usual weighting by group size.
        max_params: a parameter budget, as a fraction of the uncompressed network's parameters
            (e.g. 0.1). The sparse phase ends at the first HARD update that brings the network
            within it, and fine-tuning gets every remaining epoch (its cosine decay stretched over
            them): pruning past the budget costs accuracy, and sparse epochs spent after it
            only train under the lasso's shrinkage. ``None`` (default): the sparse phase always
            lasts ``epochs - finetune_epochs`` epochs.
        retrain: what trains the pruned network in the epochs after the sparse phase:
            ``finetune`` (its weights as pruning left them) or ``scratch`` (the same
            architecture -- widths and kept inputs -- with fresh, seeded initial weights).
            Weights that went through the lasso's shrinkage and many prunings can sit in a
            worse optimum than a fresh start of the small network (Liu et al., ICLR 2019,
            "Rethinking the value of network pruning"); ``scratch`` uses the search only for
            the architecture; it needs ``finetune_epochs`` >= 1 (fresh weights trained for no epoch)
            and no frozen layer (fresh weights that would never train).
        distill: weight ``alpha`` of knowledge distillation (Hinton et al., 2015) during the
            retraining: the loss is ``(1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T)``
            with both networks' softmax at temperature ``T`` on the same (augmented) batch. Needs
            a teacher (the trained dense network) passed to :func:`compress`; 0 (default): the
            cross-entropy alone; refused with ``finetune_epochs`` 0 unless ``max_params`` or
            ``distill_sparse`` gives it epochs to act in. A network cut to a tenth of its
            parameters learns from the dense network's full output distribution what it cannot
            from the labels of a small training set.
        distill_temperature: the temperature ``T``.
        distill_mixup: if true, the distillation term is evaluated on mixup images (each
            image of the batch blended with another one of the batch, weight uniform in [0, 1])
            instead of the batch itself; the cross-entropy stays on the batch. The teacher
            defines outputs for images between the training images, which the labels do not
            (function matching, Beyer et al., CVPR 2022), so a small training set gives the
            student more to match.
        distill_sparse: if true, the teacher is distilled during the warm-up and sparse epochs too
            (same weight, temperature and images), so the switches are pruned while the network
            imitates the teacher rather than fits the labels. On LeNet-300-100 / MNIST it kept
            more inputs and fewer hidden units and lost accuracy (docs/compression.md).
        grad_clip: each step's gradient (weights and switches together) is scaled down to this
            norm when it is larger; 0: no clipping. A guard against divergence (the one-shot
            search clips too, at 5): after a HARD update rebalances a layer, a unit can carry a
            switch of 10-15 over small weights, and SGD's step on those weights then moves the
            unit's output that many times more. Without it, LeNet-300-100 on one MNIST seed saw the
            gradient norm grow from below 8 to 3e4 within 40 steps, and small digits networks at
            lr 0.05 diverged, on a CPU whose rounding differs from the one they were tuned on.
            Where gradients stay below the norm, a run is bit for bit the same as without it.
    """

    lam: float = 1e-3
    epochs: int = 30
    finetune_epochs: int = 10
    warmup_epochs: int = 1
    update_every: int = 1
    curvature_batches: int = 8
    curvature_reduction: str = "sum"
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_units: int = 1
    gamma_init: float = 1.0
    augment: bool = True
    proximal: bool = True
    rebalance: bool = True
    lam_scale: str = "none"
    max_params: float | None = None
    retrain: str = "finetune"
    distill: float = 0.0
    distill_temperature: float = 4.0
    distill_mixup: bool = False
    distill_sparse: bool = False
    grad_clip: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.lam < math.inf:  # inf prunes every layer to min_units
            raise UserError(f"lambda must be a positive, finite number, got {self.lam}")
        if self.epochs < 1 or not 0 <= self.finetune_epochs < self.epochs:
            raise UserError(f"need epochs >= 1 and 0 <= finetune_epochs < epochs, got epochs={self.epochs}, "
                            f"finetune_epochs={self.finetune_epochs}")
        if not 0 <= self.warmup_epochs < self.sparse_epochs:
            # the message speaks of epochs and finetune_epochs, which users set, before the warm-up, which they rarely do
            raise UserError(f"epochs={self.epochs} with finetune_epochs={self.finetune_epochs} leaves "
                            f"{self.sparse_epochs} epoch(s) before retraining, none of them sparse after the "
                            f"first warmup_epochs={self.warmup_epochs}: give at least "
                            f"{self.warmup_epochs + self.finetune_epochs + 1} epochs or fewer finetune epochs")
        if not 0 < self.gamma_init < math.inf:
            # gamma 0 makes omega infinite: the first update would prune every unit, blaming lambda
            raise UserError(f"gamma_init must be a positive, finite prior variance, got {self.gamma_init}")
        if self.update_every < 1 or self.curvature_batches < 1 or self.batch_size < 1 or self.min_units < 1:
            raise UserError("update_every, curvature_batches, batch_size and min_units must be >= 1")
        if self.curvature_reduction not in ("mean", "sum"):
            raise UserError(f"curvature_reduction must be 'mean' or 'sum', not {self.curvature_reduction!r}")
        if self.lam_scale not in LAM_SCALES:
            raise UserError(f"lam_scale must be one of {', '.join(LAM_SCALES)}, not {self.lam_scale!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise UserError(f"optimizer must be 'sgd' or 'adam', not {self.optimizer!r}")
        # an infinite one gives a NaN loss, which the run would blame on the learning rate
        if not 0 < self.lr < math.inf:
            raise UserError(f"lr must be a positive, finite number, got {self.lr}")
        for field in ("momentum", "weight_decay"):  # torch's optimizer would refuse negatives naming no field
            if not 0 <= getattr(self, field) < math.inf:
                raise UserError(f"{field} must be a finite number >= 0, got {getattr(self, field)}")
        if self.retrain not in RETRAIN_MODES:
            raise UserError(f"retrain must be one of {', '.join(RETRAIN_MODES)}, not {self.retrain!r}")
        if self.retrain == "scratch" and self.finetune_epochs == 0:
            # the fresh weights would be what the run reports: no epoch is sure to train them
            raise UserError("retrain='scratch' needs finetune_epochs >= 1 (--retrain scratch, --finetune-epochs): "
                            "the fresh weights would otherwise never be trained")
        if not 0 <= self.distill <= 1:
            raise UserError(f"distill must be a weight in [0, 1], got {self.distill}")
        if not 0 < self.distill_temperature < math.inf:
            raise UserError(f"distill_temperature must be a positive, finite number, got {self.distill_temperature}")
        if self.distill_sparse and self.distill == 0:
            raise UserError("distill_sparse needs distill > 0: it names when the teacher is distilled, not how much")
        if self.distill > 0 and self.finetune_epochs == 0 and self.max_params is None and not self.distill_sparse:
            # only a budget met before the last sparse epoch leaves retraining epochs to distil in
            raise UserError("distill needs finetune_epochs >= 1 (--distill, --finetune-epochs): the teacher is "
                            "distilled while the pruned network retrains, and no epoch would retrain it")
        if self.distill_mixup and self.distill == 0:
            raise UserError("distill_mixup needs distill > 0: it changes the images the teacher is matched on")
        if not self.grad_clip >= 0:
            raise UserError(f"grad_clip must be a norm >= 0 (0: no clipping), got {self.grad_clip}")
        if self.max_params is not None and not 0 < self.max_params < 1:
            raise UserError(f"max_params must be a fraction in (0, 1), got {self.max_params}")

    @property
    def sparse_epochs(self) -> int:
        return self.epochs - self.finetune_epochs

    def lr_at(self, epoch: int, finetune_start: int | None = None) -> float:
        """Constant, then a cosine decay from ``finetune_start`` (default: the last
        ``finetune_epochs`` epochs) to the end."""
        start = self.sparse_epochs if finetune_start is None else finetune_start
        length = self.epochs - start
        if length <= 0 or epoch < start:
            return self.lr
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * (epoch - start) / length))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
