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


def split_pool(labels: np.ndarray, predefined: np.ndarray | None, val_fraction: float, test_fraction: float,
               seed: int) -> Split:
    """The data's own split where it ships one (val/test carved from train, stratified, when missing),
    otherwise `stratified_split`. A pool that is all train split (an HF copy of an image folder: one `train`
    split) ships none: it splits as the folder does, both fractions of the whole pool."""
    if predefined is None or not (predefined != 0).any():
        return stratified_split(labels, val_fraction, test_fraction, seed)
    parts = {k: np.flatnonzero(predefined == v) for k, v in (("train", 0), ("val", 1), ("test", 2))}
    for part, fraction, offset in (("test", test_fraction, 1), ("val", val_fraction, 2)):
        if len(parts[part]) == 0:
            rest = stratified_split(labels[parts["train"]], fraction, 0.0, seed + offset)
            parts[part], parts["train"] = parts["train"][rest.val], parts["train"][rest.train]
    return Split(**{k: np.sort(v) for k, v in parts.items()})


def class_ranks(indices: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`indices` in a seeded order and each one's rank within its class in that order.

    Taking every index with rank < k gives k per class, and the set for k is inside the set for any larger k.
    """
    order = np.random.default_rng(seed).permutation(indices)
    rank = np.empty(len(order), dtype=np.int64)
    for c in np.unique(labels[order]):
        mask = labels[order] == c
        rank[mask] = np.arange(mask.sum())
    return order, rank


def balanced_take(indices: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A class-balanced subset of `n` of `indices` (all when n is None or larger): classes take turns, so each
    gets n / C (± 1) while it has examples; smaller n give subsets of larger n."""
    if n is None or n >= len(indices):
        return np.sort(indices)
    order, rank = class_ranks(indices, labels, seed)
    tiebreak = np.random.default_rng(seed + 1).permutation(len(order))  # which classes get the remainder
    return np.sort(order[np.lexsort((tiebreak, rank))[:n]])


VTAB_TRAIN, VTAB_VAL = 800, 200


def vtab1k_split(split: Split, predefined: np.ndarray | None, seed: int) -> Split:
    """The VTAB-1k protocol on a pool's split: 800 train and 200 validation examples drawn at random with `seed`
    from the training data (the dataset's train split; with no validation split of its own, the validation part
    carved out of it goes back into the draw), tested on the whole test split."""
    own_val = predefined is not None and bool((predefined == 1).any())
    pool = split.train if own_val else np.union1d(split.train, split.val)
    if len(pool) < VTAB_TRAIN + VTAB_VAL:
        raise UserError(f"data.protocol: vtab1k draws {VTAB_TRAIN} + {VTAB_VAL} examples from the training split, "
                        f"which holds {len(pool)}")
    order = np.random.default_rng(seed).permutation(pool)
    return Split(np.sort(order[:VTAB_TRAIN]), np.sort(order[VTAB_TRAIN:VTAB_TRAIN + VTAB_VAL]), split.test)
