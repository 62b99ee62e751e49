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

import dataclasses
import itertools
import json
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from tl_research.adapters import optuna as optuna_adapter
from tl_research.errors import UserError
from tl_research.schema import from_dict
from tl_research.studies.search import draw
from tl_research.studies.studyspec import (
    StudySpec,
    TuneConfig,
    arm_keys,
    check_params,
    check_space,
    experiment_for,
    grid_cells,
    grid_seeds,
    resolve_cell,
    seed_list,
)

QUEUED, FIXED_CELLS, SEARCHES = True, False, False
PHASE, ARM = "phase", "arm"
TUNE, SEED = "tune", "seed"
PENDING = (TrialState.WAITING, TrialState.RUNNING)


def parse(spec: StudySpec, base: dict[str, Any], num_groups: int) -> None:
    """Arms, the tune space and which of its keys apply to each arm (a key the arm's strategy has no use for is
    not tuned there; the budget stays the same)."""
    cfg = spec.config
    for key in ("grid", "params"):
        if getattr(cfg, key) is not None:
            raise UserError(f"study.{key}: a tuned study compares `arms` and tunes each with `tune` (no {key})")
    if cfg.prefilter is not None:
        raise UserError("study.prefilter: not available for a tuned study (its arms are what is compared)")
    if len(spec.objectives) != 1:
        raise UserError("study.objectives: a tuned study selects each arm's setting on one validation metric")
    if isinstance(cfg.arms, list):  # the arms one by one: a method may differ from the others in several keys
        if not cfg.arms or not all(isinstance(a, dict) and a for a in cfg.arms):
            raise UserError("study.arms: a mapping of keys to lists of values (every combination an arm), or a "
                            "list of arms, each a mapping of its settings")
        for i, arm in enumerate(cfg.arms):
            check_params(base, arm, f"study.arms[{i}]", cfg.seed_keys)
        spec.arms = [dict(arm) for arm in cfg.arms]
    else:
        arms = grid_cells(dataclasses.replace(cfg, grid=cfg.arms, seeds=1), base, "study.arms")
        spec.arms = [{k: v for k, v in cell.items() if k != "seed"} for cell in arms]
    tune = spec.tune = from_dict(TuneConfig, cfg.tune, "study.tune.")
    check_space(tune.params, base, num_groups, "study.tune.params")
    clash = [k for k in tune.params if k in arm_keys(cfg) or k == "seed" or k in cfg.seed_keys]
    if clash:
        raise UserError(f"study.tune.params.{clash[0]}: is an arm key or a seed key; it cannot also be tuned")
    if tune.sampler == "grid":
        odd = [k for k, d in tune.params.items() if d.get("type") != "categorical"]
        if odd:
            raise UserError(f"study.tune.params.{odd[0]}: the grid sampler takes categorical parameters only")
        size = len(list(itertools.product(*(d["choices"] for d in tune.params.values()))))
        if tune.trials not in (None, size):
            raise UserError(f"study.tune.trials: the grid has {size} combinations, not {tune.trials}")
        tune.trials = size
    elif tune.trials is None:
        raise UserError("study.tune.trials: missing (the tuning budget of every arm)")
    seed_list(cfg.seeds)
    spec.tuned = [[k for k, d in tune.params.items() if _applies(base, arm, k, d, cfg.seed_keys)] for arm in spec.arms]
    for arm, keys in zip(spec.arms, spec.tuned):
        if not keys:
            raise UserError(f"study.tune.params: none of its keys applies to the arm {arm}")
        resolve_cell(experiment_for(base, arm, cfg.seed_keys), num_groups, "study.arms")


def _applies(base: dict, arm: dict[str, Any], key: str, dist: dict[str, Any], seed_keys: list[str]) -> bool:
    """Does the arm's experiment take `key` (for some value of its range): change with it, or keep the value set
    (a one-value range equal to the base's, e.g. a smoke variant's) rather than drop it as an option its strategy
    ignores?"""
    plain = experiment_for(base, arm, seed_keys, quiet=True)
    if key.startswith("regularize.") and key.split(".")[1] not in plain.regularize.terms:
        return False  # a regularizer's option is tuned where the arm has that term, never turning it on
    values = dist["choices"] if dist.get("type") == "categorical" else [dist["low"], dist["high"]]
    for value in values:
        try:
            exp = experiment_for(base, {**arm, key: value}, seed_keys, quiet=True)
        except UserError:  # refused as an option that would not take effect with this arm's settings
            continue
        node: Any = exp.to_dict()
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if exp != plain or node == value:
            return True
    return False


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


def sample_setting(study: optuna.Study, trial: optuna.Trial, spec: StudySpec) -> bool:
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
    fixed.update({k: draw(drawn, k, spec.tune.params[k]) for k in keys})
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
    if not tuning(trial):
        return trial.should_prune()
    frozen = optuna_adapter.storage(trial.study).get_trial(optuna_adapter.trial_id(trial))
    return trial.study.pruner.prune(cast(optuna.Study, _ArmView(trial.study, trial.user_attrs[ARM])), frozen)


def swept(spec: StudySpec) -> dict[str, list[Any]]:
    return {}  # a tuned study takes no prefilter: its arms are what is compared


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """A tuning trial's setting sampled from its arm's own history (then fixed on the trial), a seed run's fixed."""
    if tuning(trial) and sample_setting(trial.study, trial, spec):
        trial = optuna.Trial(trial.study, optuna_adapter.trial_id(trial))  # one that sees the setting just fixed
    attrs = optuna_adapter.storage(trial.study).get_trial_system_attrs(optuna_adapter.trial_id(trial))
    fixed = attrs.get("fixed_params", {})
    return {k: draw(trial, k, d) for k, d in space(spec, fixed).items()}


def tuning(trial: optuna.Trial) -> bool:
    return trial.user_attrs.get(PHASE) == TUNE


def prunes(trial: optuna.Trial) -> bool:
    return tuning(trial)  # a seed run always runs to the end


def cell(trial: optuna.Trial) -> dict[str, Any]:
    """The trial's phase and arm."""
    return {key: json.loads(v) if key == ARM else v for key in (PHASE, ARM)
            if (v := trial.user_attrs.get(key)) is not None}


def prepare(study: optuna.Study, spec: StudySpec, record: dict[str, Any] | None) -> int:
    return enqueue_next(study, spec)


def next_phase(study: optuna.Study, spec: StudySpec) -> int:
    return enqueue_next(study, spec)


def expected(spec: StudySpec) -> int | None:
    return len(spec.arms) * len(grid_seeds(spec.config))
