"""k-shot and fraction subsets of a training split: class-balanced, nested, seeded by the data-split seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tl_research.data.splits import class_ranks
from tl_research.errors import UserError


@dataclass(frozen=True)
class Subset:
    indices: np.ndarray
    per_class: dict[int, int]  # examples taken per class
    short_classes: int  # classes that had fewer than requested (all of theirs were taken)


def _take(indices: np.ndarray, labels: np.ndarray, quota: dict[int, int], seed: int) -> Subset:
    order, rank = class_ranks(indices, labels, seed)
    keep = rank < np.array([quota[int(c)] for c in labels[order]])
    chosen = np.sort(order[keep])
    counts = {int(c): int((labels[chosen] == c).sum()) for c in np.unique(labels[indices])}
    return Subset(chosen, counts, sum(counts[c] < quota[c] for c in counts))


def k_shot(indices: np.ndarray, labels: np.ndarray, k: int, seed: int) -> Subset:
    """Exactly k examples per class (all of a smaller class); the k-shot set is inside every larger k's set."""
    sizes = np.bincount(labels[indices])
    if k > sizes.max():
        raise UserError(f"data.shots: {k} is more than any class has in the training split (largest: {sizes.max()})")
    return _take(indices, labels, {int(c): k for c in np.unique(labels[indices])}, seed)


def fraction(indices: np.ndarray, labels: np.ndarray, share: float, seed: int) -> Subset:
    """A stratified share of every class (at least one example each); nested across shares."""
    classes, sizes = np.unique(labels[indices], return_counts=True)
    return _take(indices, labels, {int(c): max(1, int(round(share * n))) for c, n in zip(classes, sizes)}, seed)
