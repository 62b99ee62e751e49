"""NCE (Tran et al. 2019, "Transferability and Hardness of Supervised Classification Tasks"): the negative
conditional entropy -H(Y|Z) of target labels given the source model's hard predictions."""

from __future__ import annotations

import numpy as np

from tl_research.scores.registry import register_score


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


@register_score("nce", "source", order=2)
def nce_of_probabilities(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """NCE of the source classifier's hard predictions (the argmax of its probabilities (N, Z))."""
    return nce(np.asarray(source_probs).argmax(1), labels)
