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

    Where ``std`` is 0 the improvement is deterministic: ``max(mean - best - xi, 0)``.
    """
    improvement = mean - best - xi
    safe_std = std.clamp_min(1e-12)
    z = improvement / safe_std
    normal = torch.distributions.Normal(torch.zeros((), dtype=mean.dtype), torch.ones((), dtype=mean.dtype))
    ei = improvement * normal.cdf(z) + safe_std * torch.exp(normal.log_prob(z))
    return torch.where(std > 1e-12, ei.clamp_min(0.0), improvement.clamp_min(0.0))


def upper_confidence_bound(mean: torch.Tensor, std: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """``mean + sqrt(beta) * std``, elementwise (n,) -> (n,)."""
    return mean + math.sqrt(beta) * std


def score(name: str, mean: torch.Tensor, std: torch.Tensor, best: float, **options) -> torch.Tensor:
    """Dispatch by name: ``ei`` (option ``xi``) or ``ucb`` (option ``beta``)."""
    if name == "ei":
        return expected_improvement(mean, std, best, xi=options.get("xi", 0.0))
    if name == "ucb":
        return upper_confidence_bound(mean, std, beta=options.get("beta", 2.0))
    raise ValueError(f"unknown acquisition {name!r}; known: {', '.join(ACQUISITIONS)}")


def tie_priority(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of 0..n-1 used as the tie-breaking priority of n candidates."""
    return torch.randperm(n, generator=generator)


def select_best(scores: torch.Tensor, allowed: torch.Tensor, priority: torch.Tensor) -> int:
    """Index of the highest score among ``allowed`` (bool, n); exact ties go to the highest priority."""
    if not bool(allowed.any()):
        raise ValueError("no candidate left to select")
    masked = torch.where(allowed, scores, torch.full_like(scores, -math.inf))
    top = masked.max()
    tied = allowed & (masked == top)
    return int(torch.where(tied, priority, torch.full_like(priority, -1)).argmax())


def top_k(scores: torch.Tensor, allowed: torch.Tensor, priority: torch.Tensor, k: int) -> list[int]:
    """The ``k`` best allowed indices in decreasing score, ties by priority (a ranked list)."""
    allowed = allowed.clone()
    chosen = []
    for _ in range(min(k, int(allowed.sum()))):
        index = select_best(scores, allowed, priority)
        chosen.append(index)
        allowed[index] = False
    return chosen


def ranking(scores: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """All indices by decreasing score, exact ties by decreasing priority (a full ranked order)."""
    by_priority = torch.argsort(priority, descending=True)
    return by_priority[torch.argsort(scores[by_priority], descending=True, stable=True)]
