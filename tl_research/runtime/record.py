"""The run record: what produced a run (code version, packages, seeds, weights, command, device), written to
`run.json` in every run folder whether or not W&B tracking is on, and into the W&B config when it is."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from tl_research import plugins
from tl_research.config import Experiment
from tl_research.runtime.environment import package_versions

# metrics.json's flag of a finished run that learned nothing (stats.at_chance); reports name such cells
AT_CHANCE = "flag/at_chance"


def git_state(where: Path | None = None) -> dict[str, Any]:
    """Commit SHA and dirty flag of the code's checkout (None outside git)."""
    cwd = where or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "--verify", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status)}


def device_info(accelerator: str) -> dict[str, Any]:
    cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return {"accelerator": "cuda" if cuda else "cpu",
            "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
            "python": platform.python_version(), "platform": platform.platform(),
            # CPU throughput depends on it (a study's local workers split the cores between them)
            "cpu_threads": torch.get_num_threads()}


def run_record(exp: Experiment, weights_source: str, weights: str | None = None,
               extra: dict[str, Any] | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """What a run records about itself, besides its config: code and package versions, seeds, weights, command."""
    return {**git_state(), "versions": dict(package_versions()), "training_seed": exp.seed,
            "data_split_seed": exp.data.split_seed, "weights_source": weights_source, "weights_digest": weights,
            "command": list(argv) if argv is not None else None, "plugins": plugins.loaded(),
            **device_info(exp.trainer.accelerator),
            **(extra or {})}
