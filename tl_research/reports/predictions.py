"""Per-example test predictions of a study's trials, as the (seeds x examples) 0/1 matrices the crossed intervals
of `stats.py` need. A trial's predictions come from its run folder (`predictions.npz`, written by every run;
`predictions_shifted.npz` for the mean over shifted test sets) or from a results archive (`archive.py`), through a
`Lookup`. An example scored several times (once per shifted copy) is one example: its column is its mean score."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import optuna

from tl_research.data.shifts import MEAN_METRIC
from tl_research.run_folder import PREDICTIONS, SHIFTED_PREDICTIONS

METRIC = "test/acc"
# the metrics per-example predictions score, and the run folder's file for each (other metrics: seeds-only intervals)
FILES = {METRIC: PREDICTIONS, MEAN_METRIC: SHIFTED_PREDICTIONS}


class Predictions(NamedTuple):
    index: np.ndarray  # the test examples (indices into the dataset's pool), in scoring order
    label: np.ndarray
    pred: np.ndarray


class Lookup(Protocol):
    """Where a trial's predictions for a metric (of FILES) are: its run folder, or a results archive."""

    def __call__(self, trial: optuna.trial.FrozenTrial, metric: str = METRIC) -> Predictions | None: ...


def read(path: Path) -> Predictions | None:
    """A run's predictions.npz (None when the run left none)."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        return Predictions(z["index"], z["label"], z["pred"])


def from_run_folder(trial: optuna.trial.FrozenTrial, metric: str = METRIC) -> Predictions | None:
    """The predictions for `metric` a trial's run folder holds (None: no run folder, it is gone, or the run left
    none for this metric)."""
    run_dir = trial.user_attrs.get("run_dir")
    return read(Path(run_dir) / FILES[metric]) if run_dir and metric in FILES else None


def run_folders(study: str) -> Lookup:
    """The lookup of a live study: every trial's own run folder (the study name is not needed)."""
    return from_run_folder


def correct_matrix(trials: list[optuna.trial.FrozenTrial], values: list[float], lookup: Lookup,
                   metric: str = METRIC) -> tuple[np.ndarray, np.ndarray] | None:
    """The trials' (seeds x examples) matrix of scores (0/1; an example scored under several shifts: the share of
    them it got right) and the test indices its columns follow; None unless every trial left predictions for
    `metric` on one shared test set that reproduce its recorded value (`values`)."""
    found = [lookup(t, metric) for t in trials]
    if not found or any(p is None for p in found):
        return None
    index = found[0].index
    if any(not np.array_equal(p.index, index) for p in found):
        return None
    x = np.stack([p.pred == p.label for p in found]).astype(np.int8)
    keys, inverse, counts = np.unique(index, return_inverse=True, return_counts=True)
    if len(keys) < len(index):  # the same image under several shifts: correlated scores, one example
        x = np.stack([np.bincount(inverse, weights=row, minlength=len(keys)) for row in x]) / counts
        index = keys
    if not np.allclose(x.mean(1), values, atol=1e-6):  # predictions of another run than the one recorded
        return None
    return x, index
