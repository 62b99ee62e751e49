"""Stratified, seeded splits. They depend only on the labels and the data-split seed, never the training seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tl_research.errors import UserError


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Per class: shuffle with `seed`, the first test_fraction to test, the next val_fraction to val, rest train."""
    if val_fraction + test_fraction >= 1.0:
        raise UserError("data.val_fraction: val_fraction + test_fraction must leave data to train on (< 1)")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return Split(**{k: np.sort(np.concatenate(v)) for k, v in parts.items()})


def balanced_take(indices: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A class-balanced subset of `n` of `indices` (all when n is None or larger).

    Examples are ranked within their class in a seeded order and taken rank by rank, so every class gets
    n / C (± 1) while it has examples, and the subset for a smaller n is contained in the one for a larger n.
    """
    if n is None or n >= len(indices):
        return np.sort(indices)
    rng = np.random.default_rng(seed)
    order = rng.permutation(indices)
    rank = np.empty(len(order), dtype=np.int64)
    for c in np.unique(labels[order]):
        mask = labels[order] == c
        rank[mask] = np.arange(mask.sum())
    tiebreak = rng.permutation(len(order))  # which classes get the remainder
    chosen = order[np.lexsort((tiebreak, rank))[:n]]
    return np.sort(chosen)
