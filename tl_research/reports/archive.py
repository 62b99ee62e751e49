"""A results archive: what a set of studies' tables and claim checks were judged on, small enough to commit.

`studies.journal` holds the studies and their trials (an Optuna journal file: opened like any other storage);
`predictions.npz` (compressed) holds each distinct test set's indices and labels once and, per study and scored
metric (`<study>/…` for test/acc, `<study>@<metric>/…` for the others of `predictions.FILES`), every completed trial's
predictions as offsets from the labels modulo the number of classes (zero where right, so they compress to little
more than the mistakes). Re-judging from an archive needs neither the run folders nor the original storage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from tl_research.errors import UserError
from tl_research.reports import predictions
from tl_research.reports.tables import completed_trials
from tl_research.run_folder import write_npz
from tl_research.runtime.environment import RESULT_SHAPING, describe, differences, package_versions
from tl_research.studies.storage import open_storage
from tl_research.studies.study import SPEC_ATTR, create_or_load, definition
from tl_research.studies.studyspec import StudySpec

JOURNAL, PREDICTIONS = "studies.journal", "predictions.npz"
UNFINISHED = "archive_unfinished"  # a study's user attribute: its part was stopped before every trial was done
# a study's user attribute: the versions of the libraries that shape results, as installed when it was archived
ENVIRONMENT = "archive_environment"


def _smallest(x: np.ndarray) -> np.ndarray:
    return x.astype(np.min_scalar_type(int(x.max(initial=0))))


def export(names: list[str], storage: optuna.storages.BaseStorage, folder: Path,
           lookups: Callable[[str], predictions.Lookup] = predictions.run_folders,
           earlier: Archive | None = None, unfinished: frozenset[str] = frozenset(),
           continued: frozenset[str] = frozenset()) -> list[Path]:
    """Write the archive of studies `names` into `folder` (replacing an earlier one; with `earlier`, that archive's
    other studies are kept beside them: a finding run in parts); returns its files. Studies in `unfinished` are
    marked so (a part stopped midway: its claims wait, and running the part again continues them); those in
    `continued` were seeded from `earlier` (`continue_study`): their archived trials keep the archive's
    predictions, their run folders being gone."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (JOURNAL + ".tmp")
    tmp.unlink(missing_ok=True)
    target = open_storage(f"journal:{tmp}")
    arrays: dict[str, np.ndarray] = {}
    sets: list[predictions.Predictions] = []
    kept = [n for n in earlier.studies() if n not in names] if earlier else []
    sources = ([(n, storage, _either(lookups(n), earlier.lookups(n)) if earlier and n in continued else lookups(n))
                for n in names] + [(n, earlier.storage, earlier.lookups(n)) for n in kept])
    for name, held_in, lookup in sources:
        optuna.copy_study(from_study_name=name, from_storage=held_in, to_storage=target)
        copied = optuna.load_study(study_name=name, storage=target)
        if name in unfinished:
            copied.set_user_attr(UNFINISHED, True)
        if name in names:  # ran in this process (a kept study keeps the environment it was archived with)
            copied.set_user_attr(ENVIRONMENT, {k: v for k, v in package_versions().items()
                                               if k in RESULT_SHAPING and v is not None})
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

    def unfinished(self) -> list[str]:
        """The studies whose part was stopped midway (its trials so far are kept; running the part continues)."""
        return [s.study_name for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)
                if s.user_attrs.get(UNFINISHED)]

    def finished(self) -> list[str]:
        unfinished = set(self.unfinished())
        return [n for n in self.studies() if n not in unfinished]

    def environment(self, study: str) -> dict[str, str]:
        """The result-shaping library versions the study was archived with ({} for archives made before they were
        recorded)."""
        return dict(optuna.load_study(study_name=study, storage=self.storage).user_attrs.get(ENVIRONMENT, {}))

    def complete(self, study: str) -> int:
        """How many of the study's trials completed (for an unfinished one: how far its part got)."""
        return len(completed_trials(optuna.load_study(study_name=study, storage=self.storage)))

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


def environment_drift(results: Path) -> str | None:
    """One line naming the result-shaping libraries whose installed version differs from the one the archive in
    `results` was made with (None: no archive, none recorded, or none differs)."""
    if not (results / JOURNAL).is_file():
        return None
    opened = Archive(results)
    diffs: dict[str, tuple] = {}
    for study in opened.studies():
        diffs.update(differences(opened.environment(study), RESULT_SHAPING))
    if not diffs:
        return None
    return (f"warning: {results} was archived with other library versions ({describe(diffs)}); its "
            f"numbers may not reproduce exactly (`make install` installs the lock)")


def continue_study(earlier: Archive, spec: StudySpec, url: str) -> bool:
    """Seed a new storage with an unfinished study's archived trials (a part stopped in an earlier session, whose
    storage and run folders are gone), so that running the part again runs only what is missing; returns whether
    it did. The trials keep their numbers, which key their archived predictions; a trial that was not finished
    when the part stopped goes in as failed, and its cell is queued again."""
    storage = open_storage(url, spec.config)
    if spec.name not in earlier.unfinished() or spec.name in optuna.get_all_study_names(storage):
        return False  # nothing to continue, or this session's storage holds the study already
    archived = optuna.load_study(study_name=spec.name, storage=earlier.storage)
    if _comparable(archived.user_attrs.get(SPEC_ATTR, {})) != _comparable(json.loads(json.dumps(spec.to_json()))):
        raise UserError(f"study {spec.name!r}: the archive's unfinished study has a different definition; a "
                        f"part continues only the study it started (rerun it from scratch by removing the archive)")
    study_id = storage.get_study_id_from_name(create_or_load(spec, storage).study_name)
    for trial in archived.get_trials(deepcopy=True):
        if not trial.state.is_finished():
            trial.state, trial.values = optuna.trial.TrialState.FAIL, None
            trial.datetime_complete = trial.datetime_start
        storage.create_new_trial(study_id, template_trial=trial)
    return True


def _comparable(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored definition as `create_or_load` compares it (study keys at their defaults aside: a later version
    may add one), without what moves with the checkout: where runs go and the path of a source model."""
    stored = definition(stored)
    base = {k: v for k, v in stored.get("base", {}).items() if k != "output_dir"}
    base["backbone"] = {k: v for k, v in base.get("backbone", {}).items() if k != "weights"}
    return {**stored, "base": base}


def _either(first: predictions.Lookup, then: predictions.Lookup) -> predictions.Lookup:
    def lookup(trial: optuna.trial.FrozenTrial, metric: str = predictions.METRIC) -> predictions.Predictions | None:
        found = first(trial, metric)
        return found if found is not None else then(trial, metric)
    return lookup


def _key(study: str, metric: str) -> str:
    """The archive's array prefix of a study's predictions for `metric` (test/acc keeps the plain study name)."""
    return study if metric == predictions.METRIC else f"{study}@{metric}"
