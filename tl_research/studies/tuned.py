"""Tuned studies (`study.kind: tuned`): every arm of a comparison tuned on validation with the same space and
budget, then its best setting re-run with seeds and tested.

Phases run on one Optuna study through the grid queue (claimed by any number of workers): the coordinator queues
each arm's tuning trials (`user_attrs["phase"] = "tune"`, `user_attrs["arm"]` = the arm's settings as JSON); a
worker that claims one samples its setting from that arm's own finished tuning trials (TPE or random, seeded by
the trial number; the grid sampler queues its points directly). Tuning trials never run the test split. Once every
arm's tuning has finished, each arm's seed runs are queued (`phase = "seed"`) with the setting of its best tuning
trial: the best value of the study's objective (a validation metric), ties to the earliest trial.

The budget: a tuning trial that completed, was pruned, or failed with its error recorded (e.g. a diverging lr) is
spent; one whose worker was interrupted or went stale is retried, so every arm gets exactly `tune.trials`.

Pruning compares a tuning trial with its own arm's tuning trials only (`should_prune`): against the whole study, an
arm that starts slower (LP-FT re-adapting BatchNorm, a lower lr grid) would have its trials pruned for being another
arm, and could end with no completed trial to re-run.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from tl_research.adapters import optuna as optuna_adapter
from tl_research.studies.studyspec import StudySpec, arm_keys, grid_seeds

PHASE, ARM = "phase", "arm"
TUNE, SEED = "tune", "seed"
PENDING = (TrialState.WAITING, TrialState.RUNNING)


def arm_key(arm: dict[str, Any]) -> str:
    return json.dumps(arm, sort_keys=True)


def arm_of(trial: FrozenTrial | optuna.Trial) -> dict[str, Any]:
    return json.loads(trial.user_attrs[ARM])


def phase_trials(trials: list[FrozenTrial], phase: str, arm: dict[str, Any]) -> list[FrozenTrial]:
    key = arm_key(arm)
    return [t for t in trials if t.user_attrs.get(PHASE) == phase and t.user_attrs.get(ARM) == key]


def _spent(t: FrozenTrial) -> bool:
    if t.state == TrialState.FAIL:
        return t.user_attrs.get("error", "interrupted") != "interrupted"
    return True  # complete, pruned, or waiting / running (it will be)


def best_trial(trials: list[FrozenTrial], spec: StudySpec, arm: dict[str, Any]) -> FrozenTrial | None:
    """The arm's tuning trial with the best objective value (ties: the earliest); None before any completed."""
    done = [t for t in phase_trials(trials, TUNE, arm) if t.state == TrialState.COMPLETE]
    if not done:
        return None
    sign = 1 if spec.directions[0] == "maximize" else -1
    return min(done, key=lambda t: (-sign * t.value, t.number))


def _grid_points(spec: StudySpec, i: int) -> list[dict[str, Any]]:
    keys = spec.tuned[i]
    points = itertools.product(*(spec.tune.params[k]["choices"] for k in keys))
    return [dict(zip(keys, p)) for p in dict.fromkeys(points)]


def enqueue_next(study: optuna.Study, spec: StudySpec) -> int:
    """Queue what the study misses next: each arm's tuning trials up to its budget, and once every arm's tuning
    has finished, each arm's seed runs at its best setting. Returns how many trials were queued (0: nothing left
    to queue now)."""
    trials = study.get_trials(deepcopy=False)
    queued, tuning = 0, False
    for i, arm in enumerate(spec.arms):
        mine = phase_trials(trials, TUNE, arm)
        tuning |= any(t.state in PENDING for t in mine)
        spent = [t for t in mine if _spent(t)]
        attrs = {PHASE: TUNE, ARM: arm_key(arm)}
        if spec.tune.sampler == "grid":  # the points not tried yet
            tried = [{k: t.params.get(k, t.system_attrs.get("fixed_params", {}).get(k)) for k in spec.tuned[i]}
                     for t in spent]
            for point in [p for p in _grid_points(spec, i) if p not in tried]:
                study.enqueue_trial({**arm, **point}, user_attrs=attrs)
                queued += 1
            continue
        for _ in range(spec.tune.trials - len(spent)):
            study.enqueue_trial(dict(arm), user_attrs=attrs)
            queued += 1
    if queued or tuning:
        return queued
    for i, arm in enumerate(spec.arms):
        best = best_trial(trials, spec, arm)
        if best is None:  # every tuning trial failed: nothing to re-run (the report says so)
            continue
        covered = {t.params.get("seed", t.system_attrs.get("fixed_params", {}).get("seed"))
                   for t in phase_trials(trials, SEED, arm) if t.state != TrialState.FAIL}
        setting = {k: best.params[k] for k in spec.tuned[i]}
        for seed in grid_seeds(spec.config):
            if seed not in covered:
                study.enqueue_trial({**arm, **setting, "seed": seed},
                                    user_attrs={PHASE: SEED, ARM: arm_key(arm), "tuned_from": best.number})
                queued += 1
    return queued


def sample_setting(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, suggest: Any) -> bool:
    """Fix a claimed tuning trial's setting, sampled from its arm's own completed tuning trials (a throwaway
    in-memory study holds them, so one arm's history never steers another's). `suggest(trial, key, dist)` draws one
    parameter as a search study does. Returns whether it fixed anything (a trial object made before does not see
    it: Optuna reads the fixed parameters once)."""
    storage, tid = optuna_adapter.storage(study), optuna_adapter.trial_id(trial)
    fixed = dict(storage.get_trial_system_attrs(tid).get("fixed_params", {}))
    arm = arm_of(trial)
    keys = spec.tuned[spec.arms.index(arm)]
    if spec.tune.sampler == "grid" or all(k in fixed for k in keys):  # a grid point, or a retried trial
        return False
    seed = spec.config.sampler_seed + trial.number
    sampler = (optuna.samplers.RandomSampler(seed=seed) if spec.tune.sampler == "random"
               else optuna.samplers.TPESampler(seed=seed))
    scratch = optuna.create_study(direction=spec.directions[0], sampler=sampler)
    history = [t for t in phase_trials(study.get_trials(deepcopy=False), TUNE, arm) if t.state == TrialState.COMPLETE]
    scratch.add_trials([optuna.trial.create_trial(params={k: t.params[k] for k in keys},
                                                  distributions={k: t.distributions[k] for k in keys},
                                                  value=t.value) for t in history])
    drawn = scratch.ask()
    fixed.update({k: suggest(drawn, k, spec.tune.params[k]) for k in keys})
    storage.set_trial_system_attr(tid, "fixed_params", fixed)
    return True


def space(spec: StudySpec, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The distribution of each parameter a tuned study's trial holds: arm keys and the seed as categoricals, tune
    keys as the tune space."""
    out = {k: {"type": "categorical", "choices": list(dict.fromkeys(a[k] for a in spec.arms if k in a))}
           for k in arm_keys(spec.config)}
    out["seed"] = {"type": "categorical", "choices": grid_seeds(spec.config)}
    return {k: spec.tune.params.get(k, out.get(k)) for k in params}


def total(spec: StudySpec) -> int:
    return len(spec.arms) * (spec.tune.trials + len(grid_seeds(spec.config)))


class _ArmView:
    """The study as a pruner sees it for one tuning trial: its arm's tuning trials only (everything else delegates
    to the study)."""

    def __init__(self, study: optuna.Study, key: str) -> None:
        self._study, self._key = study, key

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.user_attrs.get(PHASE) == TUNE and t.user_attrs.get(ARM) == self._key]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def should_prune(trial: optuna.Trial) -> bool:
    """The study's pruner on a tuning trial, against its own arm's tuning trials (Trial.should_prune, narrowed)."""
    frozen = optuna_adapter.storage(trial.study).get_trial(optuna_adapter.trial_id(trial))
    return trial.study.pruner.prune(cast(optuna.Study, _ArmView(trial.study, trial.user_attrs[ARM])), frozen)
