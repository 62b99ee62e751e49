"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", Alg. 2): the
log marginal evidence of a Bayesian linear model per class indicator, maximised over its two precisions by the
paper's fixed-point iteration, averaged over classes and divided by N."""

from __future__ import annotations

import numpy as np

from tl_research.scores.registry import register_score

EPS = 1e-5  # the LogME reference code's guard against division by zero


def _evidence(y: np.ndarray, f: np.ndarray, v: np.ndarray, s: np.ndarray, vh: np.ndarray) -> float:
    """LogME's evidence of one target column y (N,) for features f (N, D), given the eigendecomposition
    f^T f = v diag(s) vh."""
    n, d = f.shape
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    proj = vh @ (f.T @ y)
    for _ in range(11):  # the paper: converges in at most 10 steps, typically 2-3
        gamma = (s / (s + lam)).sum()
        m = v @ (proj * beta / (alpha + beta * s))
        alpha_de = float((m * m).sum())
        alpha = gamma / (alpha_de + EPS)
        beta_de = float(((y - f @ m) ** 2).sum())
        beta = (n - gamma) / (beta_de + EPS)
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                - beta / 2.0 * (beta_de + EPS) - alpha / 2.0 * (alpha_de + EPS) - n / 2.0 * np.log(2 * np.pi))
    return float(evidence / n)


@register_score("logme", "features", order=0)
def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of features (N, D) for integer labels (N,): the mean over classes of the per-sample log evidence."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    v, s, vh = np.linalg.svd(f.T @ f, full_matrices=True)
    return float(np.mean([_evidence((y == c).astype(np.float64), f, v, s, vh) for c in np.unique(y)]))
