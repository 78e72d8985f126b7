"""Fitting the deep-kernel GP to a target's observations: their GP units and the Adam fit.

A model's job, kept apart from the BO loop (:mod:`naslib_bayes.optimizers.deep_kernel_bo`) that
calls it once per iteration, and used as well by the NASLib-style predictor
(:mod:`naslib_bayes.predictors.naslib_predictor`), so that both fit the GP the same way.
"""

from __future__ import annotations

import torch

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import require_choice
from naslib_bayes.predictors.meta_train import REFERENCE_TRANSFORMS
from naslib_bayes.predictors.surrogate import OUTPUT_TRANSFORMS


def finetune_gp(surrogate, encodings: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None,
                steps: int, lr: float, frozen=None) -> torch.Tensor:
    """``steps`` Adam steps (learning rate ``lr``) of the GP's negative log marginal likelihood.

    Fits ``surrogate.gp``'s parameters (except those ``frozen(name)`` names) and, when given, the
    target's dataset ``context`` (c,) (a leaf tensor that requires grad) to psi ``encodings``
    (n, L) and GP targets ``y`` (n,), in place; returns the last step's loss (a scalar, 0
    without steps). One BO iteration's fine-tuning, which the NASLib-style predictor repeats.
    Steps that leave the kernel without a Cholesky factor, the last one included, are a
    UserError naming ``lr``.
    """
    gp = surrogate.gp
    params = [p for name, p in gp.named_parameters() if frozen is None or not frozen(name)]
    params += [context] if context is not None else []
    optimizer = torch.optim.Adam(params, lr=lr)
    loss = torch.zeros(())
    for step in range(steps):
        optimizer.zero_grad()
        loss = _neg_mll(surrogate, encodings, y, context, step, lr)
        loss.backward()
        optimizer.step()
    if steps:
        # the last step's state is what the caller predicts from: it must have a factor too
        with torch.no_grad():
            _neg_mll(surrogate, encodings, y, context, steps, lr)
    return loss.detach()


def _neg_mll(surrogate, encodings: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None,
             step: int, lr: float) -> torch.Tensor:
    """The GP's negative log marginal likelihood after ``step`` fine-tuning steps at rate ``lr``;
    a one-line UserError where the steps took the kernel where it has no Cholesky factor."""
    try:
        return surrogate.gp.neg_mll(surrogate.kernel_inputs(encodings, context), y)
    except torch.linalg.LinAlgError as exc:
        if step == 0:  # the starting state itself: not the fine-tuning's doing
            raise
        # Adam's steps took the kernel where it has no Cholesky factor even with jitter: too
        # large a learning rate, the user's setting, not a numerical accident
        raise UserError(f"fine-tuning the GP diverged after {step} steps at learning rate {lr:g} ({exc}); "
                        "use a smaller fine-tuning learning rate") from None


def transform_observations(values: torch.Tensor, kind: str = "standardise") -> torch.Tensor:
    """The target's observations ``values`` (n,) in GP units, (n,), from the observations alone
    (never the column).

    ``standardise``: (v - mean) / std of the observations; ``copula``: normal quantile of each
    observation's mid-rank among the observations; ``robust``: (v - median) / scaled IQR of the
    observations, clipped below (each the meta-training transform of that name, applied to
    what has been seen). Observations equal up to rounding (:func:`tied`) are all 0 in each: the
    copula would otherwise rank rounding noise as it ranks accuracies.
    """
    require_choice("output_transform", kind, OUTPUT_TRANSFORMS)
    if kind == "standardise":  # its own tie check
        return standardise(values)
    if tied(values):  # one value, however rounded: each transform puts exactly equal values at 0
        return torch.zeros_like(values)
    array = values.detach().numpy()
    return torch.as_tensor(REFERENCE_TRANSFORMS[kind](array, array), dtype=values.dtype)


#: Values whose spread is at most this fraction of their magnitude are ties (rounding of equal numbers).
TIED = 1e-12


def tied(values: torch.Tensor) -> bool:
    """Whether the values (n,) are one value up to rounding (a single value is)."""
    std = values.std(unbiased=False) if values.numel() > 1 else torch.zeros((), dtype=values.dtype)
    return not float(std) > TIED * float(values.abs().max())  # relative: the values' units are the user's


def standardise(values: torch.Tensor) -> torch.Tensor:
    """(v - mean) / std of the given values (n,) -> (n,); zeros when they are tied up to rounding."""
    if tied(values):
        return torch.zeros_like(values)
    return (values - values.mean()) / values.std(unbiased=False)
