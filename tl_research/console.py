"""What the command line shows: process-wide noise control, tables, a run's result, a study's progress bar."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from tl_research.errors import ConfigWarning


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def quiet_libraries() -> None:
    """Process-wide noise control, set once at the CLI entry (the library itself sets no global state)."""
    # on 2 CPU cores with in-memory data, extra loader workers cost more than they save
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")  # short few-shot epochs
    # BN layers in eval mode at fit start are the BN policy at work, not an accident
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", ".*optimizer.step.*manual optimization.*")
    show = warnings.showwarning

    def one_line(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, ConfigWarning):
            print(f"tlr: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = one_line


def quiet_lightning() -> None:
    """Per-run Lightning chatter is noise in a study: one progress bar for the study instead."""
    import optuna

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def print_result(m: dict[str, Any]) -> None:
    keys = ["test/acc", "test/acc_top5", "test/f1_macro", "val/acc", "params/trainable", "params/total",
            "freeze/depth", "throughput/train_samples_per_sec", "throughput/infer_samples_per_sec", "memory/peak_mb"]
    keys += sorted(k for k in m if k.startswith("test_") and k.endswith("/acc"))  # shifted test sets
    print()
    print_table([[k, f"{m[k]:.4g}" if isinstance(m[k], float) else m[k]] for k in keys if k in m], ["metric", "value"])
    print(f"weights: {m['weights_source']}")
    print(f"run folder: {m['run_dir']}  (metrics.json, config.yaml, checkpoints/)")
    if "wandb_dir" in m:
        print(f"W&B run: {m['wandb_dir']}\n  upload it with: wandb sync {m['wandb_dir']}")


def study_with_progress(spec: Any, url: str, workers: int = 1) -> Any:
    """Run a study with one rich progress bar (trials done / total, best so far, ETA); prints where it runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tl_research.storage import mask_url
    from tl_research.study import DONE, execute_study, prepare_study, progress_line, total_trials

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
