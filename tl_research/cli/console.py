"""What the command line shows: process-wide noise control, tables, a run's result (a study's progress bar is in
progress.py, which needs Optuna)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from tl_research.errors import ConfigWarning, StudyNotice


def quiet_transformers() -> None:
    """transformers' warnings and progress bars off, without importing it (~2 s): a command answers a config error
    before loading any model library. transformers reads these variables on import (a user's own setting wins)."""
    if "transformers" in sys.modules:  # already imported (a second command in one process): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_libraries() -> None:
    """Process-wide noise control, set once at the CLI entry (the library itself sets no global state)."""
    # on 2 CPU cores with in-memory data, extra loader workers cost more than they save
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")  # short few-shot epochs
    # BN layers in eval mode at fit start are the BN policy at work, not an accident
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", ".*optimizer.step.*manual optimization.*")
    # on a Slurm login node a one-process run is not a mistake: DDP under Slurm is started with srun on purpose
    warnings.filterwarnings("ignore", ".*The `srun` command is available on your system but is not used.*")
    show = warnings.showwarning

    def one_line(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, ConfigWarning):
            print(f"tlr: warning: {message}", file=sys.stderr)
        elif issubclass(category, StudyNotice):
            print(f"tlr: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = one_line


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def print_result(m: dict[str, Any]) -> None:
    from tl_research.run_folder import CHECKPOINTS, CONFIG, METRICS

    keys = ["test/acc", "test/acc_top5", "test/f1_macro", "val/acc", "params/trainable", "params/total",
            "freeze/depth", "throughput/train_samples_per_sec", "throughput/infer_samples_per_sec", "memory/peak_mb"]
    keys += sorted(k for k in m if k.startswith("test_") and k.endswith("/acc"))  # shifted test sets
    print()
    print_table([[k, f"{m[k]:.4g}" if isinstance(m[k], float) else m[k]] for k in keys if k in m], ["metric", "value"])
    print(f"weights: {m['weights_source']}")
    print(f"run folder: {m['run_dir']}  ({METRICS}, {CONFIG}, {CHECKPOINTS}/)")
    if "wandb_dir" in m:
        print(f"W&B run: {m['wandb_dir']}\n  upload it with: wandb sync {m['wandb_dir']}")
    if m.get("flag/at_chance"):
        print("warning: this run learned nothing (test accuracy not above chance, training loss not below 90 % of "
              f"its start): a failed fit, e.g. an lr too high or too low; {METRICS} flags it", file=sys.stderr)
