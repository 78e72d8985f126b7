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
        raise diverged("training", f"loss {loss}", f"epoch {epoch + 1}, step {step + 1}", lr, "--lr")


def diverged(what: str, sign: str, where: str, lr: float, setting: str) -> UserError:
    """"WHAT diverged (SIGN) in WHERE, at learning rate LR", with the ``setting`` that lowers the rate."""
    return UserError(f"{what} diverged ({sign}) in {where}, at learning rate {lr:g}: run again with a lower "
                     f"learning rate ({setting})")
