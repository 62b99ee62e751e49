"""Transferability scores: how well frozen features (or a source model's predictions) suit a labelled target task,
computed before any fine-tuning. Higher is better for every score. Each function takes plain arrays, so any
features work; `rank.py` feeds them the feature cache's prefix outputs at a freeze depth.

- LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", Alg. 2): the
  log marginal evidence of a Bayesian linear model per class indicator, maximised over its two precisions by the
  paper's fixed-point iteration, averaged over classes and divided by N.
- LEEP (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned Representations"): the
  average log-likelihood of the target labels under the empirical predictor P(y|z) built from the source
  classifier's soft predictions θ(x) over its classes z.
- NCE (Tran et al. 2019, "Transferability and Hardness of Supervised Classification Tasks"): the negative
  conditional entropy -H(Y|Z) of target labels given the source model's hard predictions.
- H-score (Bao et al. 2019, "An Information-Theoretic Approach to Transferability in Task Transfer Learning"):
  tr(cov(f)^+ cov(E[f|y])), the share of feature variance explained by the class means.
- Two baselines the scores must beat to be worth their name: leave-one-out kNN accuracy and the converged
  linear probe's validation accuracy (probe.py).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf

from tl_research.training.probe import fit_probe

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


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of features (N, D) for integer labels (N,): the mean over classes of the per-sample log evidence."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    v, s, vh = np.linalg.svd(f.T @ f, full_matrices=True)
    return float(np.mean([_evidence((y == c).astype(np.float64), f, v, s, vh) for c in np.unique(y)]))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of a source classifier's probabilities (N, Z) for integer target labels (N,); <= 0."""
    theta = np.asarray(source_probs, dtype=np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    joint = np.stack([theta[y == c].sum(0) for c in classes]) / len(y)  # P(y, z), (Y, Z)
    conditional = joint / np.maximum(joint.sum(0, keepdims=True), 1e-300)  # P(y | z)
    index = np.searchsorted(classes, y)
    likelihood = (theta * conditional[index]).sum(1)  # sum_z P(y_i | z) θ(x_i)_z
    return float(np.mean(np.log(np.maximum(likelihood, 1e-300))))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """Negative conditional entropy -H(Y | Z) of target labels given the source model's hard labels; <= 0."""
    z, y = np.asarray(source_labels), np.asarray(labels)
    _, zi = np.unique(z, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((zi.max() + 1, yi.max() + 1))
    np.add.at(joint, (zi, yi), 1.0)
    joint /= len(y)
    pz = joint.sum(1, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log((joint / np.maximum(pz, 1e-300))[nz])).sum())


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


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour accuracy under cosine similarity (majority vote, ties to the nearest)."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    y = np.asarray(labels)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(y) - 1)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = y[nearest]
    correct = 0
    for i in range(len(y)):
        counts = np.bincount(votes[i], minlength=y.max() + 1)
        top = np.flatnonzero(counts == counts.max())
        pick = next(v for v in votes[i] if v in top)  # among tied classes, the one of the nearest neighbour
        correct += pick == y[i]
    return correct / len(y)


def probe_accuracy(train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray) -> float:
    """Validation accuracy of the converged linear probe (L-BFGS logistic regression, L2 chosen on validation)."""
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    fit = fit_probe(torch.as_tensor(train, dtype=torch.float32), torch.as_tensor(train_labels),
                    torch.as_tensor(val, dtype=torch.float32), torch.as_tensor(val_labels), num_classes)
    return float(fit.grid[fit.l2])
