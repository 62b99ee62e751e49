"""Search studies (`study.kind: search`): one Optuna sampler draws `study.params` (a search space) for `n_trials`
trials, pruned by the study's pruner; every trial is tested. Each worker runs Optuna's own `optimize` on the shared
study, so a search needs no queue."""

from __future__ import annotations

from typing import Any

import optuna

from tl_research.studies import prefilter
from tl_research.studies.studyspec import StudySpec, check_space

QUEUED, FIXED_CELLS, SEARCHES = False, False, True


def parse(spec: StudySpec, base: dict[str, Any], num_groups: int) -> None:
    check_space(spec.config.params, base, num_groups)


def swept(spec: StudySpec) -> dict[str, list[Any]]:
    """The categorical choices (a range lists no values)."""
    return {k: d.get("choices") for k, d in spec.config.params.items() if d.get("type") == "categorical"}


def draw(trial: optuna.Trial, key: str, d: dict[str, Any]) -> Any:
    """One parameter of a search space (`study.params` / `study.tune.params` entry) drawn for `trial`."""
    if d["type"] == "categorical":
        return trial.suggest_categorical(key, d["choices"])
    if d["type"] == "int":
        return trial.suggest_int(key, int(d["low"]), int(d["high"]), log=bool(d.get("log")))
    return trial.suggest_float(key, float(d["low"]), float(d["high"]), log=bool(d.get("log")))


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    return {key: draw(trial, key, d) for key, d in spec.config.params.items()}


def tuning(trial: optuna.Trial) -> bool:
    return False


def prunes(trial: optuna.Trial) -> bool:
    return True


def should_prune(trial: optuna.Trial) -> bool:
    return trial.should_prune()


def cell(trial: optuna.Trial) -> dict[str, Any]:
    return {}


def prepare(study: optuna.Study, spec: StudySpec, record: dict[str, Any] | None) -> int:
    """Nothing is queued; a prefilter's kept candidates are tried first."""
    if record is not None:
        prefilter.warm_start(study, record)
    return 0


def next_phase(study: optuna.Study, spec: StudySpec) -> int:
    return 0


def total(spec: StudySpec) -> int:
    return spec.config.n_trials


def expected(spec: StudySpec) -> int | None:
    return None
