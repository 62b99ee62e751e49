"""H-score (Bao et al. 2019, "An Information-Theoretic Approach to Transferability in Task Transfer Learning"):
tr(cov(f)^+ cov(E[f|y])), the share of feature variance explained by the class means."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import ledoit_wolf

from tl_research.scores.registry import register_score


@register_score("h_score", "features", order=3)
def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: bool = True) -> float:
    """H-score: tr(cov(f)^-1 cov(E[f | y])). With more features than examples the plain estimate (pseudo-inverse,
    `shrinkage=False`) saturates at classes - 1 for any features; the default shrinks the covariance (Ledoit-Wolf),
    the regularised H-score of Ibrahim et al. 2022 ("Newer is not always better")."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    y = np.asarray(labels)
    means = np.zeros_like(f)
    for c in np.unique(y):
        means[y == c] = f[y == c].mean(0)
    cov_means = means.T @ means / len(f)
    if shrinkage:  # cov_a = (1 - a) S + a tr(S)/D I, and the class-mean covariance scaled by (1 - a) likewise
        cov, a = ledoit_wolf(f, assume_centered=True)
        return float(np.trace(np.linalg.solve(cov, (1 - a) * cov_means)))
    cov = f.T @ f / len(f)
    return float(np.trace(np.linalg.pinv(cov, rcond=1e-10, hermitian=True) @ cov_means))
