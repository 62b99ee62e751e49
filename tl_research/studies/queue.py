"""The queue a study's workers share: the coordinator queues cells as WAITING Optuna trials, and each worker
claims one atomically (WAITING -> RUNNING succeeds for exactly one), runs it and tells its end state.

On RDB storages (SQLite, PostgreSQL) a worker sends heartbeats while it runs a cell: a killed worker's trial turns
FAIL once its heartbeat is `grace_period` seconds old, and Optuna's retry callback queues the same cell again (the
retry inherits its run folder, so it resumes from its last checkpoint). A worker that is stopped hands its cell
back at once."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from tl_research.adapters import optuna as optuna_adapter
from tl_research.errors import StudyNotice
from tl_research.studies.studyspec import StudyConfig

Objective = Callable[[optuna.Trial], list[float]]  # one trial run to its values


def _heartbeat(storage: Any, trial_id: int, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        storage.record_heartbeat(trial_id)


def run_claimed(study: optuna.Study, trial: optuna.Trial, objective: Objective, interval: float) -> TrialState:
    """Run a claimed trial to its end state (heartbeats every `interval` seconds while it runs, on storages that
    take them); an exception or NaN fails it with the message kept."""
    storage = optuna_adapter.storage(study)  # the heartbeat API lives on the storage (RDB storages only)
    stop = threading.Event()
    beat = None
    if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval():
        beat = threading.Thread(target=_heartbeat, args=(storage, optuna_adapter.trial_id(trial), stop,
                                                         interval), daemon=True)
        beat.start()
    try:
        values = objective(trial)
        study.tell(trial, values)
        return TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        trial.set_user_attr("pruned", str(exc))
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except Exception as exc:  # a trial's failure must not stop the study
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    finally:
        stop.set()
        if beat is not None:
            beat.join()


def fail_stale(study: optuna.Study) -> None:
    """Fail trials whose worker stopped sending heartbeats; Optuna's retry callback re-queues their cells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def hand_back(study: optuna.Study, trial_id: int) -> None:
    """Fail a trial this worker holds (RUNNING) as it stops, and queue its cell again at once (instead of waiting
    for its heartbeat to go stale): the retry inherits the trial's parameters and attributes, so the next worker
    that claims it resumes the run folder from its last checkpoint (a preempted Slurm task's cell is neither lost
    nor started over)."""
    storage = optuna_adapter.storage(study)
    if storage.get_trial(trial_id).state == TrialState.RUNNING:
        storage.set_trial_user_attr(trial_id, "error", "interrupted")
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)  # the same copy of the cell
        retry(study, storage.get_trial(trial_id))


def claim(study: optuna.Study, held: list[int]) -> optuna.Trial | None:
    """Atomically take one WAITING trial (RUNNING on success, its id appended to `held` at once); None when the
    queue is empty."""
    storage = optuna_adapter.storage(study)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        tid = optuna_adapter.trial_id(frozen)
        try:
            if storage.set_trial_state_values(tid, state=TrialState.RUNNING):
                held.append(tid)
                if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval():
                    # at once: a RUNNING trial without any heartbeat is never seen as stale
                    storage.record_heartbeat(tid)
                return optuna.Trial(study, tid)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def running_elsewhere(study: optuna.Study) -> bool:
    """RUNNING trials on a storage with heartbeats (without them a killed worker's trial never turns stale, so
    journal storages do not wait: rerun after `tlr` prints the cells that are missing)."""
    storage = optuna_adapter.storage(study)
    beats = hasattr(storage, "get_heartbeat_interval") and storage.get_heartbeat_interval()
    return bool(beats) and bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def work_queue(study: optuna.Study, config: StudyConfig, objective: Objective, on_trial: Any,
               held: list[int]) -> int:
    """Claim and run queued trials until the queue is empty and nothing runs elsewhere; returns how many ran
    here (`held`: the trial this worker holds, to hand back if it is stopped)."""
    done, waiting = 0, False
    while True:
        fail_stale(study)  # a killed worker's cell goes back into the queue (RDB storages)
        held.clear()
        trial = claim(study, held)
        if trial is None:
            if not running_elsewhere(study):
                return done
            # another worker holds a cell (or held it and was killed): wait for it to finish, or for its
            # heartbeat to go stale so that fail_stale hands the cell back to this queue
            if not waiting:
                running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
                warnings.warn(StudyNotice(
                    f"waiting for {running} trial(s) running elsewhere: another worker's, or a stopped worker's, "
                    f"which is retried here once its heartbeat is {config.grace_period} s old"), stacklevel=2)
                waiting = True
            time.sleep(min(5.0, float(config.heartbeat_interval)))
            continue
        waiting = False
        run_claimed(study, trial, objective, config.heartbeat_interval)
        done += 1
        if on_trial:
            on_trial(study)
