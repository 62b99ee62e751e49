"""Studies on a Slurm cluster: `tlr study --launcher slurm --workers N` queues the study's cells in its storage and
submits a job array of N `tlr worker` tasks against the same storage (plain `sbatch`, the script written next to
the study so a user can read and resubmit it).

Preemption: every task asks for SIGUSR1 90 s before its time limit (`--signal=B:USR1@90`) and is requeueable. A
worker that receives SIGUSR1 or SIGTERM (preemption, `scancel --signal`, the time limit) hands its cell back — the
trial fails as "interrupted" and a retry of the cell, which inherits its run folder, is queued at once — and, inside
Slurm, requeues its own task while cells remain; the worker that claims the retry resumes the run from its last
checkpoint (and its W&B run continues), so no cell is lost and none completes twice. The storage URL travels in
the job's environment (TLR_STORAGE), never in the script when it holds a password.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tl_research.errors import UserError
from tl_research.redact import STORAGE_ENV, mask_url

SIGNAL_LEAD = 90  # seconds before the time limit a task is told to stop (SIGUSR1)


@dataclass(frozen=True)
class SlurmOptions:
    workers: int = 1
    partition: str | None = None
    time: str | None = None  # Slurm's time formats: minutes, HH:MM:SS, D-HH:MM …
    gpus_per_worker: int | None = None
    cpus_per_worker: int | None = None
    extra: list[str] = field(default_factory=list)  # further sbatch options, e.g. --qos=low
    shared_fs: bool = False  # the user says a SQLite / journal storage file is on a filesystem every node sees


def check_storage(url: str, shared_fs: bool) -> None:
    """SQLite and journal files coordinate workers through file locks on one filesystem: refused unless the user
    says it is shared by every node (PostgreSQL is the way for a cluster)."""
    if (url.startswith("sqlite:") or not url.partition("://")[1]) and not shared_fs:
        raise UserError(f"--storage: {mask_url(url)} is a file; Slurm tasks may run on several nodes, which need one "
                        f"storage they all reach: use PostgreSQL (postgresql+psycopg://…), or pass --slurm-shared-fs "
                        f"if the file is on a filesystem every node sees")


def script(name: str, url: str, opts: SlurmOptions, folder: Path) -> str:
    """The sbatch script of the worker array (paths absolute: it runs from the submitting directory)."""
    lines = ["#!/bin/bash",
             f"# `tlr worker` array of study {name}, written by `tlr study --launcher slurm`. Resubmit: sbatch {folder}"
             "/workers.sbatch",
             f"# with {STORAGE_ENV} set to the study's storage URL when it holds a password (it is not written here).",
             f"#SBATCH --job-name=tlr-{name}",
             f"#SBATCH --array=0-{opts.workers - 1}",
             "#SBATCH --ntasks=1",
             "#SBATCH --requeue",
             "#SBATCH --open-mode=append",
             f"#SBATCH --signal=B:USR1@{SIGNAL_LEAD}",
             f"#SBATCH --output={folder}/worker-%A_%a.out",
             f"#SBATCH --chdir={Path.cwd()}"]
    for flag, value in (("--partition", opts.partition), ("--time", opts.time),
                        ("--cpus-per-task", opts.cpus_per_worker), ("--gpus-per-task", opts.gpus_per_worker)):
        if value is not None:
            lines.append(f"#SBATCH {flag}={value}")
    lines += [f"#SBATCH {extra}" for extra in opts.extra]
    stored = url if mask_url(url) == url else ""
    lines += [f'export {STORAGE_ENV}="${{{STORAGE_ENV}:-{stored}}}"',
              # exec: the worker is the batch shell, so the USR1 Slurm sends the shell reaches it
              f"exec {shlex.quote(sys.executable)} -m tl_research.cli worker --study {shlex.quote(name)}"]
    return "\n".join(lines) + "\n"


def submit(name: str, url: str, opts: SlurmOptions, folder: Path) -> tuple[str, Path]:
    """Write the script into `folder` and submit it; returns the job id and the script's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "workers.sbatch"
    path.write_text(script(name, url, opts, folder.resolve()))
    try:
        done = subprocess.run(["sbatch", "--parsable", str(path)], env={**os.environ, STORAGE_ENV: url},
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("--launcher: slurm needs `sbatch` on this machine (a Slurm login node)") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise UserError(f"--launcher: sbatch refused the worker array ({first}); the script is {path}")
    return done.stdout.strip().split(";")[0], path


def task_id() -> str | None:
    """This Slurm task's job id (an array task's `<array job>_<index>`), or None outside Slurm."""
    if "SLURM_ARRAY_JOB_ID" in os.environ and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_if_cells_remain(study: optuna.Study) -> bool:
    """Inside a Slurm task stopped by a signal: requeue the task when the study still has queued cells (the one
    just handed back among them), so the array keeps its workers. Returns whether it asked Slurm to."""
    job = task_id()
    if job is None or not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return False
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        print(f"tlr: could not requeue Slurm task {job}: {done.stderr.strip()}", file=sys.stderr)
    return done.returncode == 0
