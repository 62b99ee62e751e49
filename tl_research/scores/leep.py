"""LEEP (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned Representations"): the
average log-likelihood of the target labels under the empirical predictor P(y|z) built from the source
classifier's soft predictions θ(x) over its classes z."""

from __future__ import annotations

import numpy as np

from tl_research.scores.registry import register_score


@register_score("leep", "source", order=1)
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
