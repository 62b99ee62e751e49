"""How well a transferability score orders candidates the way fine-tuning does: Kendall's tau, weighted tau (the
top of the ranking weighs more; Vigna 2015, the measure You et al. 2021 report for LogME) and top-1 regret (the
test accuracy lost by fine-tuning the score's favourite instead of the best candidate), each with a percentile
bootstrap interval over candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, weightedtau


@dataclass(frozen=True)
class Agreement:
    tau: float
    tau_ci: tuple[float, float]
    wtau: float
    wtau_ci: tuple[float, float]
    regret: float  # best truth - truth of the score's top candidate (ties: their mean; 0: picked the best)
    regret_ci: tuple[float, float]
    n: int  # candidates


def measures(score: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Kendall's tau, weighted tau and top-1 regret of one set of candidates (no interval)."""
    tau = float(kendalltau(score, truth).statistic)
    wtau = float(weightedtau(score, truth).statistic)
    # a tie at the top (LEEP is the same at every depth of a backbone) is a coin flip between the tied
    # candidates, not a pick of whichever comes first
    regret = float(truth.max() - truth[score == score.max()].mean())
    return tau, wtau, regret


def agreement(score: np.ndarray, truth: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Agreement:
    """Agreement of `score` (higher = predicted better) with `truth` (fine-tuned test accuracy), one entry per
    candidate. Candidates without a score (NaN) are left out."""
    score, truth = np.asarray(score, dtype=float), np.asarray(truth, dtype=float)
    keep = ~np.isnan(score) & ~np.isnan(truth)
    score, truth = score[keep], truth[keep]
    if len(score) < 3:
        raise ValueError(f"agreement needs at least 3 scored candidates, got {len(score)}")
    point = measures(score, truth)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(score), len(score))
        if len(np.unique(score[idx])) > 1 and len(np.unique(truth[idx])) > 1:  # tau needs variation
            draws.append(measures(score[idx], truth[idx]))
    arr = np.array(draws)
    ci = [(float(np.quantile(arr[:, j], 0.025)), float(np.quantile(arr[:, j], 0.975))) for j in range(3)]
    return Agreement(point[0], ci[0], point[1], ci[1], point[2], ci[2], len(score))
