"""W&B tracking: one W&B run per `run()`, offline by default, files inside the run folder."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tl_research.config import Experiment

TRACKED_PACKAGES = ("torch", "lightning", "timm", "transformers", "optuna", "wandb", "torchmetrics")


def git_state(where: Path | None = None) -> dict[str, Any]:
    """Commit SHA and dirty flag of the code's checkout (None outside git)."""
    cwd = where or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True,
                                    timeout=10).stdout.strip()) if sha else None
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"git_sha": sha, "git_dirty": dirty}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_config(exp: Experiment, weights_source: str) -> dict[str, Any]:
    """What a run records about itself: the resolved experiment, code and package versions, seeds, weights."""
    return {**exp.to_dict(), **git_state(), "versions": package_versions(), "training_seed": exp.seed,
            "data_split_seed": exp.data.split_seed, "weights_source": weights_source}


def tracking_mode(exp: Experiment) -> str:
    """WANDB_MODE in the environment wins over the config (so a shell or CI can turn tracking off globally)."""
    return os.environ.get("WANDB_MODE", exp.tracking.mode)


@dataclass
class Tracker:
    logger: Any  # lightning WandbLogger, or None when tracking is disabled

    def finish(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """Close the W&B run (final metrics into its summary); returns what metrics.json should add."""
        if self.logger is None:
            return {}
        wb_run = self.logger.experiment
        if metrics is not None:
            wb_run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        info = {"wandb_dir": str(Path(wb_run.dir).parent.resolve()), "wandb_run_id": wb_run.id}
        wb_run.finish(exit_code=0 if metrics is not None else 1)
        return info


def start_tracking(exp: Experiment, run_dir: Path, weights_source: str) -> Tracker:
    mode = tracking_mode(exp)
    if mode == "disabled":
        return Tracker(None)
    from lightning.pytorch.loggers import WandbLogger

    name = f"{exp.name}-{exp.freeze.strategy}-s{exp.seed}"
    logger = WandbLogger(name=name, project=os.environ.get("WANDB_PROJECT", exp.tracking.project),
                         entity=os.environ.get("WANDB_ENTITY", exp.tracking.entity), save_dir=str(run_dir),
                         group=exp.name, job_type=exp.freeze.strategy, mode=mode,
                         tags=[exp.backbone.name, exp.data.name], config=run_config(exp, weights_source))
    return Tracker(logger)
