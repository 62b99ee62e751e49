"""Per-example test predictions of a study's trials, as the (seeds x examples) 0/1 matrices the crossed intervals
of `stats.py` need. A trial's predictions come from its run folder (`predictions.npz`, written by every run) or from
a results archive (`archive.py`), through a `Lookup`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import optuna

METRIC = "test/acc"  # the metric the predictions score: other metrics fall back to seeds-only intervals


class Predictions(NamedTuple):
    index: np.ndarray  # the test examples (indices into the dataset's pool), in scoring order
    label: np.ndarray
    pred: np.ndarray


Lookup = Callable[[optuna.trial.FrozenTrial], "Predictions | None"]


def read(path: Path) -> Predictions | None:
    """A run's predictions.npz (None when the run left none)."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        return Predictions(z["index"], z["label"], z["pred"])


def from_run_folder(trial: optuna.trial.FrozenTrial) -> Predictions | None:
    """The predictions a trial's run folder holds (None: no run folder, or it is gone)."""
    run_dir = trial.user_attrs.get("run_dir")
    return read(Path(run_dir) / "predictions.npz") if run_dir else None


def run_folders(study: str) -> Lookup:
    """The lookup of a live study: every trial's own run folder (the study name is not needed)."""
    return from_run_folder


def correct_matrix(trials: list[optuna.trial.FrozenTrial], values: list[float], lookup: Lookup,
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The trials' (seeds x examples) 0/1 matrix and the test indices its columns follow; None unless every trial
    left predictions on one shared test set that reproduce its recorded accuracy (`values`)."""
    found = [lookup(t) for t in trials]
    if not found or any(p is None for p in found):
        return None
    index = found[0].index
    if any(not np.array_equal(p.index, index) for p in found):
        return None
    x = np.stack([p.pred == p.label for p in found]).astype(np.int8)
    if not np.allclose(x.mean(1), values, atol=1e-6):  # predictions of another run than the one recorded
        return None
    return x, index
