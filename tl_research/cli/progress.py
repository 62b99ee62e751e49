"""A study's progress on the terminal: one rich progress bar (trials done / total, best so far, ETA) instead of
per-run Lightning output."""

from __future__ import annotations

import logging
from typing import Any

import optuna
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tl_research.redact import mask_url
from tl_research.studies.study import DONE, execute_study, prepare_study, progress_line, total_trials


def quiet_lightning() -> None:
    """Per-run Lightning chatter is noise in a study: one progress bar for the study instead."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_with_progress(spec: Any, url: str, workers: int = 1) -> Any:
    """Run a study with one rich progress bar (trials done / total, best so far, ETA); prints where it runs."""
    quiet_lightning()
    study, queued = prepare_study(spec, url)
    print(f"study {spec.name} ({spec.config.kind}, {total_trials(spec)} trials) on {mask_url(url)}: "
          f"{queued} queued; {progress_line(study, spec)}", flush=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as bar:
        task = bar.add_task(spec.name, total=total_trials(spec), info="")

        def update(s: Any) -> None:
            bar.update(task, completed=len(s.get_trials(deepcopy=False, states=DONE)), info=progress_line(s, spec))

        update(study)
        folder = execute_study(study, spec, url, workers, update)
    if folder:
        print(f"W&B study table: wandb sync {folder}")
    return study
