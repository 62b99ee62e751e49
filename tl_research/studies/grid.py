"""Grid studies (`study.kind: grid`): every combination of `study.grid`'s values times the seeds is one cell, queued
once by the coordinator and claimed by exactly one worker (an ablation: every cell runs to the end and is tested).
A suite's tasks are one more axis of the grid."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState

from tl_research.studies import suites
from tl_research.studies.studyspec import StudySpec, cell_experiment, grid_cells, grid_seeds

QUEUED, FIXED_CELLS, SEARCHES = True, True, False
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def parse(spec: StudySpec, base: dict[str, Any], num_groups: int) -> None:
    """Every cell, each resolved against its own backbone (a grid may sweep backbone.name)."""
    cfg, first = spec.config, spec.experiment
    if cfg.suite is not None:
        spec.suite = suites.load_suite(cfg.suite)
        cfg.grid = suites.task_axis(spec.suite, cfg.grid)
    spec.cells = grid_cells(cfg, base, suite=spec.suite)
    groups = {(first.backbone.name, first.backbone.coarse): num_groups}
    for cell in spec.cells:
        cell_experiment(spec, cell, groups)


def swept(spec: StudySpec) -> dict[str, list[Any]]:
    return dict(spec.config.grid or {})


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    # a claimed cell carries its values as Optuna fixed params: suggest returns exactly those
    space = {**spec.config.grid, "seed": grid_seeds(spec.config)}
    return {k: trial.suggest_categorical(k, v) for k, v in space.items()}


def tuning(trial: optuna.Trial) -> bool:
    return False


def prunes(trial: optuna.Trial) -> bool:
    return False


def should_prune(trial: optuna.Trial) -> bool:
    return trial.should_prune()


def cell(trial: optuna.Trial) -> dict[str, Any]:
    return {}


def prepare(study: optuna.Study, spec: StudySpec, record: dict[str, Any] | None) -> int:
    """Queue every cell that has no trial that finished, waits or runs; returns how many were queued."""
    covered = {json.dumps(t.params if t.params else t.system_attrs.get("fixed_params", {}), sort_keys=True)
               for t in study.get_trials(deepcopy=False,
                                         states=(*DONE, TrialState.WAITING, TrialState.RUNNING))}
    queued = 0
    for c in spec.cells:
        if json.dumps(c, sort_keys=True) not in covered:
            study.enqueue_trial(c)
            queued += 1
    return queued


def next_phase(study: optuna.Study, spec: StudySpec) -> int:
    return 0


def total(spec: StudySpec) -> int:
    return len(spec.cells)


def expected(spec: StudySpec) -> int | None:
    return len(spec.cells)

