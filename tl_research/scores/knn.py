"""Leave-one-out kNN accuracy on frozen features: a baseline a transferability score must beat to be worth its
name."""

from __future__ import annotations

import numpy as np

from tl_research.scores.registry import register_score


@register_score("knn", "features", order=4)
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
