"""Acquisition functions over a finite candidate set, and seeded tie-breaking.

Scores are computed for every candidate from the GP posterior (mean and standard deviation of
the latent function, in the units the GP was fitted in); :func:`select_best` picks
the highest-scoring allowed candidate, breaking exact ties by a fixed seeded priority so that a
run is reproducible and different seeds may differ.
"""

from __future__ import annotations

import math

import torch

ACQUISITIONS = ("ei", "ucb")


def expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: float, xi: float = 0.0) -> torch.Tensor:
    """``E[max(f - best - xi, 0)]`` under ``f ~ N(mean, std^2)``, elementwise (n,) -> (n,).

    Where ``std`` is 0 the improvement is deterministic: ``max(mean - best - xi, 0)``. Computed
    as ``exp`` of :func:`log_expected_improvement`, so it keeps its relative accuracy until it
    underflows (the textbook ``improvement * Phi(z) + std * phi(z)`` is rounding noise below z = -8).
    """
    improvement = mean - best - xi
    return torch.where(std > _MIN_STD, torch.exp(log_expected_improvement(mean, std, best, xi)),
                       improvement.clamp_min(0.0))


def log_expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: float, xi: float = 0.0) -> torch.Tensor:
    """``log`` of :func:`expected_improvement`, accurate where EI itself underflows, (n,) -> (n,).

    ``EI = std * h(z)`` with ``z = (mean - best - xi) / std`` and ``h(z) = phi(z) + z * Phi(z)``;
    ``log h`` is taken in a form free of cancellation for negative z (see :func:`_log_h`).
    Where ``std`` is 0 (at most ``_MIN_STD``): ``log(mean - best - xi)`` with an improvement;
    without one, see :func:`_rank_certain_non_improvements`.
    """
    improvement = mean - best - xi
    safe_std = std.clamp_min(_MIN_STD)
    log_ei = torch.log(safe_std) + _log_h(improvement / safe_std)
    log_ei = torch.where(std > _MIN_STD, log_ei, torch.log(improvement.clamp_min(0.0)))
    return _rank_certain_non_improvements(log_ei, improvement, (std <= _MIN_STD) & (improvement <= 0))


def _rank_certain_non_improvements(log_ei: torch.Tensor, improvement: torch.Tensor,
                                   certain: torch.Tensor) -> torch.Tensor:
    """``log_ei`` (n,) with the cells ``certain`` (n,) bool -- no std, no improvement, log EI
    -inf -- scored ``floor + improvement``, ``floor`` below every finite score of ``log_ei``
    (the improvement scaled up where ``floor`` is so low that means 1e-8 apart would round together).

    As std -> 0 their EI vanishes faster than any other cell's, and the slowest for the mean
    closest to the incumbent: that limit's order. Left at -inf, a search whose every unqueried
    cell had collapsed to no std chose by tie priority alone, blind to the means and to a
    prior's weight added to these scores (:class:`~naslib_bayes.optimizers.tnas.TNAS`).
    """
    if not bool(certain.any()):
        return log_ei
    finite = log_ei[torch.isfinite(log_ei)]
    floor = torch.zeros((), dtype=log_ei.dtype)
    if finite.numel():  # strictly below, also where the lowest is too large for a step of 1
        lowest = finite.min()
        floor = torch.minimum(lowest - 1, torch.nextafter(lowest, torch.tensor(-math.inf, dtype=log_ei.dtype)))
    step = max(1.0, -float(floor) * 1e-8)
    return torch.where(certain, floor + step * improvement, log_ei)


_MIN_STD = 1e-12
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_h(z: torch.Tensor) -> torch.Tensor:
    """``log(phi(z) + z * Phi(z))``, elementwise.

    For z > -1 directly. Below, ``h = phi(z) * (1 + z * Phi(z) / phi(z))`` with
    ``Phi(z) / phi(z) = sqrt(pi / 2) * erfcx(-z / sqrt(2))`` (no underflow). That sum is about
    ``1 / z^2`` and its rounding error about 1e-16, so its ``log1p`` loses digits as |z| grows and
    is -inf from |z| ~ 5e7; below ``_TAIL_FROM`` the asymptotic series
    ``h = phi(z) / z^2 * (1 - 3 / z^2 + 15 / z^4 - ...)`` takes over, exact to rounding there.
    """
    log_phi = -0.5 * z * z - _LOG_SQRT_2PI
    direct = torch.log(torch.exp(log_phi) + z * torch.special.ndtr(z))
    ratio = math.sqrt(math.pi / 2) * torch.special.erfcx(-z / math.sqrt(2))
    middle = log_phi + torch.log1p(z * ratio)
    inverse_square = 1.0 / (z * z)
    tail = log_phi + torch.log(inverse_square) + torch.log1p(-3 * inverse_square + 15 * inverse_square**2)
    return torch.where(z > -1, direct, torch.where(z > _TAIL_FROM, middle, tail))


_TAIL_FROM = -1e3  # the series' first omitted term, 105 / z^6, is 1e-16 here


def upper_confidence_bound(mean: torch.Tensor, std: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """``mean + sqrt(beta) * std``, elementwise (n,) -> (n,)."""
    return mean + math.sqrt(beta) * std


def score(name: str, mean: torch.Tensor, std: torch.Tensor, best: float, **options) -> torch.Tensor:
    """Dispatch by name: ``ei`` (option ``xi``) or ``ucb`` (option ``beta``); ``mean``, ``std`` (n,) -> (n,).

    ``ei`` scores by log EI: it ranks cells as EI does where EI has digits, and goes on ranking
    them where EI is rounding noise or underflows to 0 (late in a search, every cell far below the
    incumbent)."""
    if name == "ei":
        return log_expected_improvement(mean, std, best, xi=options.get("xi", 0.0))
    if name == "ucb":
        return upper_confidence_bound(mean, std, beta=options.get("beta", 2.0))
    raise ValueError(f"unknown acquisition {name!r}; known: {', '.join(ACQUISITIONS)}")


def tie_priority(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of 0..n-1, (n,) long, used as the tie-breaking priority of n candidates."""
    return torch.randperm(n, generator=generator)


def select_best(scores: torch.Tensor, allowed: torch.Tensor, priority: torch.Tensor) -> int:
    """Index of the highest score among ``allowed`` (bool, n); exact ties go to the highest priority.

    ``scores`` (n,) and ``priority`` (n,) are indexed like ``allowed``.

    A NaN score counts as the lowest, so that it can neither win nor hide the allowed cells.
    """
    if not bool(allowed.any()):
        raise ValueError("no candidate left to select")
    masked = torch.where(allowed & ~scores.isnan(), scores, torch.full_like(scores, -math.inf))
    top = masked.max()
    tied = allowed & (masked == top)
    return int(torch.where(tied, priority, torch.full_like(priority, -1)).argmax())


def top_k(scores: torch.Tensor, allowed: torch.Tensor, priority: torch.Tensor, k: int) -> list[int]:
    """The ``k`` best allowed indices in decreasing score, ties by priority (a ranked list).

    ``scores`` (n,), ``allowed`` (n,) bool and ``priority`` (n,) as in :func:`select_best`.
    """
    allowed = allowed.clone()
    chosen = []
    for _ in range(min(k, int(allowed.sum()))):
        index = select_best(scores, allowed, priority)
        chosen.append(index)
        allowed[index] = False
    return chosen


def ranking(scores: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """All indices by decreasing score, exact ties by decreasing priority (a full ranked order).

    ``scores`` (n,), ``priority`` (n,) -> (n,) long, a permutation of 0..n-1.
    """
    by_priority = torch.argsort(priority, descending=True)
    return by_priority[torch.argsort(scores[by_priority], descending=True, stable=True)]
