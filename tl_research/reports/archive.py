"""A results archive: what a set of studies' tables and claim checks were judged on, small enough to commit.

`studies.journal` holds the studies and their trials (an Optuna journal file: opened like any other storage);
`predictions.npz` (compressed) holds each distinct test set's indices and labels once and, per study and scored
metric (`<study>/…` for test/acc, `<study>@<metric>/…` for the others of `predictions.FILES`), every completed trial's
predictions as offsets from the labels modulo the number of classes (zero where right, so they compress to little
more than the mistakes). Re-judging from an archive needs neither the run folders nor the original storage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna

from tl_research.errors import UserError
from tl_research.reports import predictions
from tl_research.reports.tables import completed_trials
from tl_research.runs.rundir import write_npz
from tl_research.studies.storage import open_storage

JOURNAL, PREDICTIONS = "studies.journal", "predictions.npz"


def _smallest(x: np.ndarray) -> np.ndarray:
    return x.astype(np.min_scalar_type(int(x.max(initial=0))))


def export(names: list[str], storage: optuna.storages.BaseStorage, folder: Path,
           lookups: Callable[[str], predictions.Lookup] = predictions.run_folders,
           earlier: Archive | None = None) -> list[Path]:
    """Write the archive of studies `names` into `folder` (replacing an earlier one; with `earlier`, that archive's
    other studies are kept beside them: a finding run in parts); returns its files."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (JOURNAL + ".tmp")
    tmp.unlink(missing_ok=True)
    target = open_storage(f"journal:{tmp}")
    arrays: dict[str, np.ndarray] = {}
    sets: list[predictions.Predictions] = []
    kept = [n for n in earlier.studies() if n not in names] if earlier else []
    sources = [(n, storage, lookups(n)) for n in names] + [(n, earlier.storage, earlier.lookups(n)) for n in kept]
    for name, held_in, lookup in sources:
        optuna.copy_study(from_study_name=name, from_storage=held_in, to_storage=target)
        trials = completed_trials(optuna.load_study(study_name=name, storage=held_in))
        for metric in predictions.FILES:
            rows, offsets = [], []
            for trial in trials:
                found = lookup(trial, metric)
                if found is None:
                    continue
                k = next((i for i, s in enumerate(sets) if np.array_equal(s.index, found.index)
                          and np.array_equal(s.label, found.label)), None)
                if k is None:
                    k = len(sets)
                    sets.append(found)
                classes = int(max(found.pred.max(initial=0), found.label.max(initial=0))) + 1
                rows.append((trial.number, k, classes))
                offsets.append((found.pred - found.label) % classes)
            if rows:  # one array per study and metric: per-array overhead in the zip would outweigh the predictions
                key = _key(name, metric)
                arrays[f"{key}/trials"] = np.array(rows, dtype=np.int64)  # number, test set, classes
                arrays[f"{key}/offsets"] = _smallest(np.concatenate(offsets))
    for k, s in enumerate(sets):
        arrays[f"sets/{k}/index"], arrays[f"sets/{k}/label"] = _smallest(s.index), _smallest(s.label)
    write_npz(folder / PREDICTIONS, **arrays)
    tmp.replace(folder / JOURNAL)
    return [folder / JOURNAL, folder / PREDICTIONS]


class Archive:
    """An archive opened for re-judging: `storage` holds its studies, `lookups(study)` its predictions."""

    def __init__(self, folder: Path) -> None:
        missing = [f for f in (JOURNAL, PREDICTIONS) if not (folder / f).is_file()]
        if missing:
            raise UserError(f"{folder}: no results archive here (missing {', '.join(missing)}); it is written by a "
                            f"full run")
        self.storage = open_storage(f"journal:{folder / JOURNAL}", must_exist=True)
        with np.load(folder / PREDICTIONS) as z:
            self._arrays = {k: z[k] for k in z.files}

    def studies(self) -> list[str]:
        return optuna.get_all_study_names(self.storage)

    def lookups(self, study: str) -> predictions.Lookup:
        starts = {metric: self._starts(_key(study, metric)) for metric in predictions.FILES}

        def lookup(trial: optuna.trial.FrozenTrial, metric: str = predictions.METRIC) -> predictions.Predictions | None:
            if trial.number not in starts.get(metric, {}):
                return None
            start, (k, classes) = starts[metric][trial.number]
            label = self._arrays[f"sets/{k}/label"].astype(np.int64)
            offset = self._arrays[f"{_key(study, metric)}/offsets"][start:start + len(label)]
            return predictions.Predictions(self._arrays[f"sets/{k}/index"], label, (label + offset) % classes)
        return lookup

    def _starts(self, key: str) -> dict[int, tuple[int, list[int]]]:
        """Trial number -> (its first offset, [test set, classes]) in the archive's array `key`."""
        rows = self._arrays.get(f"{key}/trials", np.zeros((0, 3), dtype=np.int64))
        sizes = [len(self._arrays[f"sets/{k}/label"]) for _, k, _ in rows]
        return dict(zip(rows[:, 0].tolist(), zip(np.cumsum([0, *sizes[:-1]]).tolist(), rows[:, 1:].tolist())))


def _key(study: str, metric: str) -> str:
    """The archive's array prefix of a study's predictions for `metric` (test/acc keeps the plain study name)."""
    return study if metric == predictions.METRIC else f"{study}@{metric}"
