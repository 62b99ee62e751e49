"""Optuna (bounded <6): a study's storage and a trial's storage id. Optuna's public API runs trials through
`study.optimize` / `ask` / `tell`; the work queue here (claiming a WAITING trial atomically, heartbeats while a
trial runs, handing a cell back) needs the storage calls Optuna's own `optimize` makes, on the same objects."""

from __future__ import annotations

from typing import Any

import optuna


def storage(study: optuna.Study) -> Any:
    """The study's storage object (`Study._storage`): the storage API (`set_trial_state_values`,
    `record_heartbeat`, system attributes) has no public route from a Study."""
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """A trial's storage id (`_trial_id`): the storage methods take it, and `trial.number` is not it."""
    return trial._trial_id
