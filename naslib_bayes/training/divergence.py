"""The one error of a training run whose loss stopped being a number."""

from __future__ import annotations

import math

from naslib_bayes.errors import UserError


def require_finite_loss(loss: float, epoch: int, step: int, lr: float) -> None:
    """A UserError naming where training diverged when ``loss`` is NaN or infinite.

    Said at the step it happens, instead of training on NaN weights to the end and failing to
    write NaN statistics to result.json. ``epoch`` and ``step`` count from 0 and are shown from 1.
    """
    if not math.isfinite(loss):
        raise UserError(f"training diverged (loss {loss}) in epoch {epoch + 1}, step {step + 1}, at learning "
                        f"rate {lr:g}: run again with a lower learning rate (--lr)")
