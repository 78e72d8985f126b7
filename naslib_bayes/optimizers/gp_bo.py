"""``gp-bo``: the TNAS deep-kernel GP and BO loop with no transfer (the ablation).

The surrogate is built fresh from the seed: psi is a seeded, untrained DAG-GRU encoder whose
encodings of all cells (pairwise distinct) are standardised per dimension and frozen, and the
MLP xi and the GP hyper-parameters are fitted from their seeded initial values on the target's
observations alone at every iteration. The initial design is uniformly random (among the cells
with a value, on a partial benchmark). Nothing from other datasets is used, so it measures what
the meta-learning in ``tnas`` adds.

It differs from ``tnas``'s BO loop only where a model fitted from scratch needs it: ten random
initial cells instead of five from a prior, and 100 fitting steps per iteration instead of 50
from the meta-learned state. The target's observations are transformed as ``tnas`` transforms
them (``output_transform``, default ``copula``: the normal quantile of their rank), so that a
few degenerate cells among the random initial ones (NB201 has cells at 1-10% accuracy) do not
dominate the GP's fit, as they would after plain standardisation (``standardise``, the form
before this option existed).
"""

from __future__ import annotations

from typing import Any

import torch

from naslib_bayes.optimizers.deep_kernel_bo import DeepKernelBO
from naslib_bayes.optimizers.hyperparameters import at_least, require_choice
from naslib_bayes.predictors.surrogate import OUTPUT_TRANSFORMS, SurrogateConfig, TNASSurrogate, standardise_encodings
from naslib_bayes.search_spaces.nasbench201 import cell as nb201


class GPBO(DeepKernelBO):
    """Deep-kernel GP BO trained from scratch on the target only.

    Hyper-parameters (beyond :class:`DeepKernelBO`'s):
        encoder_hidden: GRU size of the random psi.
        output_transform: how the target's observations become GP targets (``copula``,
            ``standardise`` or ``robust``; see :mod:`naslib_bayes.predictors.meta_train`).
    """

    defaults: dict[str, Any] = {
        **DeepKernelBO.defaults,
        "initial_design": 10,
        "finetune_steps": 100,
        "finetune_lr": 0.01,
        "encoder_hidden": 64,
        "output_transform": "copula",
    }
    lower_bounds = {**DeepKernelBO.lower_bounds, "encoder_hidden": at_least(1)}

    def check_config(self) -> None:
        super().check_config()
        # on construction: at setup, a comparison had spent the runs of the optimizers before it
        require_choice("output_transform", self.config["output_transform"], OUTPUT_TRANSFORMS)

    def build_surrogate(self):
        config = SurrogateConfig(encoder_hidden=int(self.config["encoder_hidden"]),
                                 output_transform=self.config["output_transform"])
        return TNASSurrogate(config, generator=self.torch_gen)

    def prepare_encodings(self, encodings: torch.Tensor) -> torch.Tensor:
        """psi of all cells (15625, L), each dimension standardised over the cells (the encoder is untrained)."""
        return standardise_encodings(encodings)

    def initial_design(self) -> list[int]:
        # The random cells rs, re, ls and bananas start from for the same seed (the same draws of
        # the same stream), so that rows of a comparison differ by the methods, not by their luck.
        chosen: list[nb201.Cell] = []
        for _ in range(min(int(self.config["initial_design"]), int(self.in_domain.sum()))):
            chosen.append(self.random_unqueried(exclude=chosen))
        self.initial = [self._index[cell] for cell in chosen]
        return list(self.initial)

    def result_extras(self) -> dict[str, Any]:
        extras = super().result_extras()
        k = min(len(self.initial), self.problem.objective.budget)  # what was queried, as tnas records it
        extras["initial_design"] = {"k": k, "source": "uniformly random cells", "only": False}
        extras["surrogate"] = {"path": None, "meta_trained_here": False, "note": "no transfer: fitted on the target only"}
        return extras
