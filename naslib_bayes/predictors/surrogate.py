"""The TNAS surrogate: architecture encoder psi, dataset context phi, and the deep-kernel GP.

Kernel inputs are ``[psi(cell), phi(dataset)]``. phi has three modes:

* ``off``: no dataset encoding; the kernel sees psi only.
* ``learned``: each meta-training dataset owns a learned context vector; a new dataset starts
  from their mean, which BO then fine-tunes on the target's observations.
* ``images``: phi is the Set Transformer :class:`DatasetEncoder` applied to a fixed feature
  extractor's features of ``images_per_class`` images of each class.

The surrogate is rebuilt from :class:`SurrogateConfig` (plain values) and a ``state_dict``; see
:mod:`naslib_bayes.predictors.surrogate_io` for the file format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from naslib_bayes.optimizers.hyperparameters import require_choice
from naslib_bayes.predictors.deep_kernel_gp import DeepKernelGP, FeatureMLP
from naslib_bayes.predictors.encoders.dag_gru import DagGRUEncoder, cells_to_batch
from naslib_bayes.predictors.encoders.set_transformer import DatasetEncoder
from naslib_bayes.search_spaces.nasbench201.cell import NUM_EDGES, NUM_OPS

DATASET_ENCODER_MODES = ("off", "learned", "images")
#: How accuracies become GP targets (``SurrogateConfig.output_transform``; the maps are meta_train's).
OUTPUT_TRANSFORMS = ("standardise", "copula", "robust")


@dataclass
class SurrogateConfig:
    """Sizes and modes of a :class:`TNASSurrogate` (plain values only: it is stored in files).

    Attributes:
        encoder_hidden: GRU state size of psi (64; the paper uses 512).
        encoding_dim: L, the size of psi's output.
        mlp_hidden: hidden layer sizes of xi.
        feature_dim: size of xi's output, the space the Matern kernel measures distances in.
        dataset_encoder: ``off``, ``learned`` or ``images``.
        context_dim: size of phi's output (``learned`` and ``images``).
        meta_datasets: names of the meta-training datasets, in context-row order.
        feature_extractor: images mode: ``random-conv``, ``pixels`` or ``module:factory``.
        feature_dim_in: images mode: the feature extractor's output size.
        set_dim: width of the Set Transformer blocks.
        images_per_class: images sampled per class for phi.
        max_classes: classes sampled for phi (all when None).
        output_transform: how accuracies become GP targets, ``standardise``, ``copula`` or ``robust``
            (set by meta-training; BO applies the same to the target's observations).
    """

    encoder_hidden: int = 64
    encoding_dim: int = 16
    mlp_hidden: tuple[int, ...] = (32, 32)
    feature_dim: int = 16
    dataset_encoder: str = "off"
    context_dim: int = 4
    meta_datasets: tuple[str, ...] = ()
    feature_extractor: str = "random-conv"
    feature_dim_in: int = 0
    set_dim: int = 32
    images_per_class: int = 20
    max_classes: int | None = 20
    output_transform: str = "standardise"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        require_choice("dataset_encoder", self.dataset_encoder, DATASET_ENCODER_MODES)
        # checked where a surrogate file is read, not at the first BO step that uses it
        require_choice("output_transform", self.output_transform, OUTPUT_TRANSFORMS)
        self.mlp_hidden = tuple(int(h) for h in self.mlp_hidden)
        self.meta_datasets = tuple(self.meta_datasets)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mlp_hidden"] = list(self.mlp_hidden)
        out["meta_datasets"] = list(self.meta_datasets)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SurrogateConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def uses_context(self) -> bool:
        return self.dataset_encoder != "off"


@dataclass
class Evidence:
    """Meta-training evaluations the surrogate conditions on to predict a new dataset.

    Attributes:
        cells: (m, 6) op-index tuples, long.
        values: (m,) accuracies in GP units (``output_transform`` with their own dataset's statistics), float64.
        dataset: (m,) index of each row's meta-training dataset, long.
    """

    cells: torch.Tensor
    values: torch.Tensor
    dataset: torch.Tensor


def cell_index(cells: torch.Tensor) -> torch.Tensor:
    """Position of op-index tuples (m, 6) in the lexicographic order of ``nb201.all_cells()``, (m,)."""
    weights = NUM_OPS ** torch.arange(NUM_EDGES - 1, -1, -1)
    return (cells.long() * weights).sum(dim=1)


def standardise_encodings(encodings: torch.Tensor) -> torch.Tensor:
    """Each dimension of psi's encodings of all cells (n, L) standardised over the cells, (n, L).

    An untrained psi's outputs vary little around a common offset; standardising each dimension
    over all cells (no accuracies involved) gives xi inputs of unit scale. Used wherever an
    untrained surrogate scores cells (``gp-bo``, a predictor without a surrogate file).
    """
    return (encodings - encodings.mean(0)) / encodings.std(0).clamp_min(1e-12)


class TNASSurrogate(nn.Module):
    """psi + phi + deep-kernel GP.

    Args:
        config: sizes and modes.
        generator: draws every initial weight (local randomness only).
    """

    def __init__(self, config: SurrogateConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        # Layers draw a default initialisation from torch's global generator as they are built; with
        # a ``generator`` every weight is redrawn from it, so those draws only moved the caller's stream.
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self._build(config, generator)
        self.evidence: Evidence | None = None
        self.meta_phi: torch.Tensor | None = None  # images mode: (n_meta, c), phi of each meta dataset

    def _build(self, config: SurrogateConfig, generator: torch.Generator | None) -> None:
        """The networks psi, phi (learned contexts or the image-set encoder) and the GP."""
        self.arch_encoder = DagGRUEncoder(hidden=config.encoder_hidden, out_dim=config.encoding_dim, generator=generator)
        context_dim = config.context_dim if config.uses_context else 0
        if config.dataset_encoder == "learned":
            init = torch.empty(len(config.meta_datasets), context_dim, dtype=torch.float64)
            self.contexts = nn.Parameter(init.normal_(0.0, 0.1, generator=generator))
        if config.dataset_encoder == "images":
            from naslib_bayes.predictors.dataset_context import build_feature_extractor

            self.feature_extractor = build_feature_extractor(config.feature_extractor)
            config.feature_dim_in = int(self.feature_extractor.out_dim)
            self.dataset_encoder = DatasetEncoder(config.feature_dim_in, config.set_dim, context_dim,
                                                  generator=generator).double()
        mlp = FeatureMLP(config.encoding_dim + context_dim, config.mlp_hidden, config.feature_dim,
                         generator=generator).double()
        self.gp = DeepKernelGP(mlp).double()

    # ---- encodings --------------------------------------------------------------------------
    def encode(self, cells: Sequence[Sequence[int]]) -> torch.Tensor:
        """psi of cells with gradient, (n, L), float64."""
        return self.arch_encoder(cells_to_batch(cells)).double()

    @torch.no_grad()
    def encode_all(self, cells: Sequence[Sequence[int]]) -> torch.Tensor:
        """psi of many cells without gradient (the cache BO scores from), (n, L), float64."""
        return self.arch_encoder.encode_cells(cells).double()

    def meta_context(self, index: int) -> torch.Tensor | None:
        """``learned`` mode: the context of meta-training dataset ``index``, (context_dim,)."""
        return self.contexts[index] if self.config.dataset_encoder == "learned" else None

    def initial_context(self) -> torch.Tensor | None:
        """``learned`` mode: the starting context of a new dataset, the mean of the learned ones, (context_dim,)."""
        if self.config.dataset_encoder != "learned":
            return None
        return self.contexts.detach().mean(dim=0).clone()

    def dataset_context(self, index: int) -> torch.Tensor | None:
        """The context (context_dim,) a meta-training dataset's evidence is seen with (``None`` when ``off``)."""
        if self.config.dataset_encoder == "learned":
            return self.contexts[index]
        if self.config.dataset_encoder == "images":
            return self.meta_phi[index]
        return None

    def set_evidence(self, evidence: "Evidence", meta_phi: torch.Tensor | None = None) -> None:
        """Attach the meta-training evidence (and, ``images`` mode, each meta dataset's phi, (n_meta, context_dim))."""
        self.evidence = evidence
        if meta_phi is not None:
            self.meta_phi = meta_phi.detach().to(torch.float64)

    def evidence_inputs(self, encodings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kernel inputs, values and noise scales of the evidence, given psi of all cells.

        ``encodings`` (15625, L) in lexicographic cell order -> ((m', L + c), (m',), (m',)).
        Rows with the same kernel input (a cell that several datasets evaluated, when the kernel
        sees no dataset context) are merged into their mean with noise scale 1/count: for a GP
        with Gaussian noise that is the same posterior with fewer points.
        """
        ev = self.evidence
        key = cell_index(ev.cells)
        if self.config.uses_context:
            key = key * len(self.config.meta_datasets) + ev.dataset
        unique, inverse = torch.unique(key, return_inverse=True)
        count = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ev.values))
        values = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(0, inverse, ev.values) / count
        first = torch.full((unique.numel(),), ev.values.numel(), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(ev.values.numel()), reduce="amin")
        x = encodings[cell_index(ev.cells[first])]
        if self.config.uses_context:
            contexts = torch.stack([self.dataset_context(i).detach() for i in range(len(self.config.meta_datasets))])
            x = torch.cat([x, contexts[ev.dataset[first]].to(x.dtype)], dim=1)
        return x, values, 1.0 / count

    def kernel_inputs(self, encodings: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """[psi, phi]: encodings (n, L) and a context (c,) -> (n, L + c)."""
        if context is None:
            if self.config.uses_context:
                raise ValueError("this surrogate needs a dataset context")
            return encodings
        return torch.cat([encodings, context.to(encodings.dtype).expand(encodings.size(0), -1)], dim=1)
