"""Studies on an Optuna storage: one trial is one `run()`; the study is created or resumed, its kind (kinds.py)
queues or samples its trials, and they run here or in local worker processes sharing the queue (queue.py).
Re-running the study command queues what has no finished, waiting or running trial (finished cells are skipped,
failed ones retried).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from tl_research import plugins
from tl_research.errors import StudyFailed, UserError
from tl_research.pipeline import run
from tl_research.redact import STORAGE_ENV
from tl_research.run_folder import trim_checkpoints, unfinished
from tl_research.runtime.tracking import log_study_table
from tl_research.studies import prefilter, queue
from tl_research.studies.kinds import StudyKind, kind_of
from tl_research.studies.storage import open_storage
from tl_research.studies.studyspec import StudyConfig, StudySpec, load_study_json

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
SPEC_ATTR = "tlr_spec"
PLUGINS_ATTR = "tlr_plugins"  # the plugins the study was created with: [{name, digest}]


def _sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.sampler_seed)
    return optuna.samplers.TPESampler(seed=cfg.sampler_seed)


def _pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner. The median pruner judges no trial before half the study's epochs (its base experiment's
    `max_epochs`: an arm that sweeps `trainer.max_epochs` shares that warm-up): judged from the first epoch,
    a higher lr that starts slower but ends best was pruned (surgical_tuned: full fine-tuning's 1e-3 at epoch 0 of
    8 on both datasets, an lr its pilot had chosen), which biases a tuned comparison toward fast starters."""
    warmup = spec.experiment.trainer.max_epochs // 2
    return {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup),
            "hyperband": optuna.pruners.HyperbandPruner(), "none": optuna.pruners.NopPruner()}[spec.config.pruner]


def create_or_load(spec: StudySpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions,
                                sampler=_sampler(spec.config), pruner=_pruner(spec), load_if_exists=True)
    saved = study.user_attrs.get(SPEC_ATTR)
    current = json.loads(json.dumps(spec.to_json()))
    if saved is not None and definition(saved) != definition(current):
        raise UserError(f"study {spec.name!r} exists in this storage with a different definition; "
                        f"rename the study or use another storage")
    if saved != current:  # new, or an operational key changed: workers follow the coordinator
        study.set_user_attr(SPEC_ATTR, spec.to_json())
    recorded = study.user_attrs.get(PLUGINS_ATTR, [])
    plugins.require(recorded, f"study {spec.name!r}")  # a resumed study computes with the code it began with
    known = {r["name"] for r in recorded}
    if any(r["name"] not in known for r in plugins.loaded()):
        study.set_user_attr(PLUGINS_ATTR, [*recorded, *(r for r in plugins.loaded() if r["name"] not in known)])
    if saved is None:
        # the dashboard and Optuna's plots label the objectives with their metric names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in spec.objectives])
    return study


# how trials are kept, not what they compute: changing it on a resume is allowed
OPERATIONAL = ("checkpoints",)


def definition(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored study definition without the study keys at their defaults: a study keeps resuming after a later
    version adds a study option (stored definitions then lack it)."""
    defaults = json.loads(json.dumps(dataclasses.asdict(StudyConfig())))
    study = {k: v for k, v in stored.get("study", {}).items()
             if k not in OPERATIONAL and (k not in defaults or v != defaults[k])}
    return {**stored, "study": study}


def load_existing(name: str, storage: optuna.storages.BaseStorage, flag: str = "--study", strict: bool = False,
                  ) -> tuple[optuna.Study, StudySpec]:
    """A study and its definition, as a worker on another machine sees them (`flag`: the argument that named
    the study, for the error), its plugins imported (`strict`, as for a worker: each exactly as recorded)."""
    try:
        summary = next(s for s in optuna.get_all_study_summaries(storage) if s.study_name == name)
    except StopIteration:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise UserError(f"{flag}: no study {name!r} in this storage (studies: {names})") from None
    plugins.require(summary.user_attrs.get(PLUGINS_ATTR), f"study {name!r}", strict)  # before cells name entries
    spec = load_study_json(summary.user_attrs[SPEC_ATTR])
    study = optuna.load_study(study_name=name, storage=storage, sampler=_sampler(spec.config),
                              pruner=_pruner(spec))
    return study, spec


# ------------------------------------------------------------------ one trial

class OptunaPruning(L.Callback):
    """Reports the objective metric every validation epoch; raises TrialPruned when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str, kind: StudyKind) -> None:
        self.trial, self.metric, self.kind = trial, metric, kind

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        self.trial.report(value, trainer.current_epoch)
        self.trial.set_user_attr("last_reported", value)
        if self.kind.should_prune(self.trial):
            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch} with {self.metric}={value:.4f}")


def objective(trial: optuna.Trial, spec: StudySpec) -> list[float]:
    """One trial = one `run()`; user attributes get every final metric, the run folder and the W&B run id."""
    kind = kind_of(spec)
    params = kind.suggest(trial, spec)
    exp = spec.experiment_for(params)
    exp = dataclasses.replace(exp, trainer=dataclasses.replace(exp.trainer, progress_bar=False))
    # a cell handed back mid-run (a preempted worker) goes on from its last checkpoint, in its own folder and W&B
    # run; otherwise a new folder named after its cell, unique even when one study name lives in several storages
    cell = kind.cell(trial)
    named = folder_label(params, cell.get("phase"))
    out = _unfinished(trial) or (Path(exp.output_dir) / "studies" / spec.name /
                                 f"trial-{trial.number:04d}-{named}-{secrets.token_hex(3)}")
    trial.set_user_attr("run_dir", str(out))  # copied to the cell's retry if this attempt is interrupted
    # an ablation cell or a seed run always runs to the end; searches and tuning trials prune (single objective:
    # Optuna cannot prune multi); a tuning trial is selected on validation and never sees the test split
    tuning = kind.tuning(trial)
    prune = kind.prunes(trial) and len(spec.objectives) == 1 and spec.config.pruner != "none"
    callbacks = [OptunaPruning(trial, spec.objectives[0].metric, kind)] if prune else []
    label = ",".join(f"{k.rsplit('.', 1)[-1]}={v:.3g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
                     for k, v in params.items())
    try:
        result = run(exp, out, callbacks=callbacks, group=spec.name, label=label, test=not tuning, cell=cell)
    except optuna.TrialPruned:
        trim_checkpoints(out, spec.config.checkpoints)
        raise
    trim_checkpoints(out, spec.config.checkpoints)  # a failed trial keeps its files, for the post-mortem
    for key, value in result.metrics.items():
        if isinstance(value, (int, float, str)):
            trial.set_user_attr(key, value)
    values = [float(result.metrics[o.metric]) for o in spec.objectives]
    if not all(math.isfinite(v) for v in values) or not math.isfinite(result.metrics.get("train/loss", 0.0)):
        raise FloatingPointError(f"non-finite result: {dict(zip([o.metric for o in spec.objectives], values))}")
    return values


def folder_label(params: dict[str, Any], phase: str | None = None) -> str:
    """What a trial folder's name says of its cell: a tuned study's phase, then each parameter's last key part and
    value (`tune-depth-lr0.0045-seed0`), in characters every shell and file system takes."""
    parts = [phase] if phase else []
    for key, value in params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(shown if key == "freeze.strategy" else f"{key.rsplit('.', 1)[-1]}{shown}")
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", "-".join(parts))[:80]


def _unfinished(trial: optuna.Trial) -> Path | None:
    """The run folder of an earlier attempt at this trial's cell (a retry inherits its user attributes) that left a
    last checkpoint and no result."""
    folder = trial.user_attrs.get("run_dir")
    if folder is None:
        return None
    return Path(folder) if unfinished(Path(folder)) else None


def work(study: optuna.Study, spec: StudySpec, on_trial: Any = None) -> int:
    """A worker: grid cells (or a tuned study's queued trials) until the queue is empty, or search trials until
    n_trials are done."""
    if kind_of(spec).QUEUED:
        held: list[int] = []
        try:
            return queue.work_queue(study, spec.config, lambda trial: objective(trial, spec), on_trial, held)
        except BaseException:  # Ctrl-C or SIGTERM (Lightning turns both into SystemExit) may land anywhere, even
            # between claiming a cell and starting it: the cell held is handed back
            for trial_id in held:
                queue.hand_back(study, trial_id)
            raise

    callbacks = [MaxTrialsCallback(spec.config.n_trials, states=DONE)]
    if on_trial:
        callbacks.append(lambda s, t: on_trial(s))

    def func(trial: optuna.Trial) -> list[float]:
        try:
            return objective(trial, spec)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
            raise
        except SystemExit as exc:  # Lightning's form of Ctrl-C / SIGTERM: as an interrupt, Optuna fails the trial
            # (instead of leaving it RUNNING) and stops
            trial.set_user_attr("error", "interrupted")
            raise KeyboardInterrupt from exc

    study.optimize(func if len(spec.objectives) > 1 else (lambda t: func(t)[0]), timeout=spec.config.timeout,
                   n_trials=spec.config.n_trials, callbacks=callbacks, catch=(Exception,),
                   show_progress_bar=False)
    return len(study.get_trials(states=DONE))


@dataclasses.dataclass
class Worker:
    """A worker process, and the error lines (`tlr: error: …`) it printed: its stderr is passed on to ours as it
    comes, so that a worker that stops with an error can be named by what it said."""

    proc: subprocess.Popen
    said: list[str]
    reader: threading.Thread

    def wait(self) -> int:
        code = self.proc.wait()
        self.reader.join()  # its stderr read to the end
        return code


def spawn_workers(n: int, name: str, url: str) -> list[Worker]:
    out = []
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, "-m", "tl_research.cli", "worker", "--study", name],
                                env=worker_env(n, url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        said: list[str] = []
        reader = threading.Thread(target=_pass_on, args=(proc.stderr, said), daemon=True)
        reader.start()
        out.append(Worker(proc, said, reader))
    return out


def _pass_on(stream: Any, said: list[str]) -> None:
    for line in stream:
        sys.stderr.write(line)
        if line.startswith("tlr: error: "):
            said.append(line.removeprefix("tlr: error: ").strip())


def _check_workers(study: optuna.Study, workers: list[Worker]) -> None:
    """Every worker gone: when all of them stopped with an error, or some did and cells are still queued, the
    study cannot finish — one line with what the first of them said, never a quiet "0/N done"."""
    failed = [w for w in workers if w.wait() != 0]
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if failed and (len(failed) == len(workers) or queued):
        reason = next((w.said[-1] for w in failed if w.said), f"exit code {failed[0].proc.returncode}")
        raise StudyFailed(f"workers: {len(failed)} of {len(workers)} stopped with an error ({reason}); "
                          f"{len(queued)} cells still queued (rerun the study once that is fixed)")


def worker_env(n: int, url: str) -> dict[str, str]:
    """The environment of each of `n` local workers. The URL travels here: a password in it must not be in the
    workers' command lines (visible to every user of the machine, and recorded by run.json and W&B). Each worker
    computes on its share of the cores (unless the user set the thread count): n workers each using every core
    oversubscribe them, and run slower together than one alone."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, STORAGE_ENV: url}
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // n)))
    return env


def total_trials(spec: StudySpec) -> int:
    return kind_of(spec).total(spec)


def cell_key(trial: optuna.trial.FrozenTrial) -> str:
    """A trial's settings (a queued one's are its fixed params), to tell a retried cell from a failed one."""
    return json.dumps(trial.params or trial.system_attrs.get("fixed_params", {}), sort_keys=True, default=str)


def open_failures(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Failed trials whose cell has no other try that completed, was pruned, or is queued or running: a stopped
    worker's trial retried since, or a continued part's unfinished cell queued again, is not a failure to report."""
    tried = {cell_key(t) for t in trials if t.state != TrialState.FAIL}
    return [t for t in trials if t.state == TrialState.FAIL and cell_key(t) not in tried]


def progress_line(study: optuna.Study, spec: StudySpec) -> str:
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in DONE]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = ""
    if complete and len(spec.objectives) == 1:
        pick = max if spec.objectives[0].direction == "maximize" else min
        best = f" best {spec.objectives[0].metric}={pick(t.value for t in complete):.4f}"
    failed = len(open_failures(trials))
    return f"{len(done)}/{total_trials(spec)} done{best}" + (f", {failed} failed" if failed else "")


def trial_rows(study: optuna.Study, spec: StudySpec) -> tuple[list[str], list[list[Any]]]:
    """Finished trials as table rows: number, state, swept params, objective metrics and test/acc."""
    keys = sorted({k for t in study.trials for k in t.params})
    metrics = list(dict.fromkeys([o.metric for o in spec.objectives] + ["test/acc"]))
    rows = [[t.number, t.state.name] + [t.params.get(k) for k in keys] + [t.user_attrs.get(m) for m in metrics]
            for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    return ["trial", "state", *keys, *metrics], rows


Progress = Callable[[optuna.Study], None]


def prepare_study(spec: StudySpec, url: str) -> tuple[optuna.Study, int]:
    """Create or resume the study and queue its missing grid cells; returns the study and how many were queued."""
    study = create_or_load(spec, open_storage(url, spec.config))
    queue.fail_stale(study)  # trials of killed workers: failed, their cells re-queued (RDB storages)
    record = prefilter.apply(spec, study, create=True)  # only the kept candidates' cells (ranked once)
    return study, kind_of(spec).prepare(study, spec, record)


def execute_study(study: optuna.Study, spec: StudySpec, url: str, workers: int = 1,
                  progress: Progress | None = None) -> str | None:
    """Run the study's trials here or in `workers` processes (calling `progress` as trials finish), then log the
    trials table to a W&B summary run; returns that run's folder (None when tracking is off). A tuned study runs
    its tuning phase, then queues and runs its seed phase (a rerun retries what failed)."""
    _drain(study, spec, url, workers, progress)
    if kind_of(spec).next_phase(study, spec):
        _drain(study, spec, url, workers, progress)
    if progress:
        progress(study)
    columns, rows = trial_rows(study, spec)
    return log_study_table(spec.experiment, spec.name, columns, rows,
                           Path(spec.experiment.output_dir) / "studies" / spec.name)


def _drain(study: optuna.Study, spec: StudySpec, url: str, workers: int, progress: Progress | None) -> None:
    """Work the queue (or the search) here, or in `workers` processes until they all exit."""
    if workers <= 1:
        work(study, spec, on_trial=progress)
        return
    procs = spawn_workers(workers, spec.name, url)
    try:
        while any(w.proc.poll() is None for w in procs):
            time.sleep(2)
            if progress:
                progress(study)
    except BaseException:  # interrupted or terminated: so are the workers (each hands its cell back)
        for w in procs:
            w.proc.terminate()
        for w in procs:
            w.wait()
        raise
    _check_workers(study, procs)


def run_study(spec: StudySpec, url: str, workers: int = 1, progress: Progress | None = None) -> optuna.Study:
    """Create or resume the study, queue missing grid cells, run them, log the trials table. Safe to repeat:
    finished cells are skipped, failed ones retried."""
    study, _ = prepare_study(spec, url)
    execute_study(study, spec, url, workers, progress)
    return study
