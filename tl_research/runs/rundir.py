"""The run folder: chosen once, never overwritten, resumed only by the identical experiment; files in it are
written atomically."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tl_research.backbones.runs import tested_file
from tl_research.config import Experiment, dump_yaml
from tl_research.data.shifts import MEAN_METRIC
from tl_research.errors import UserError

# the per-example test predictions a run leaves, per scored metric (read by reports/predictions.py): the test split,
# and every shifted copy of it in turn (the mean over `data.eval_shifts`)
PREDICTION_FILES = {"test/acc": "predictions.npz", MEAN_METRIC: "predictions_shifted.npz"}


def make_run_dir(exp: Experiment, out: str | Path | None = None, restart: bool = False) -> tuple[Path, Path | None]:
    """The run folder and, when `out` holds an unfinished run of this same experiment, the checkpoint to resume.

    Default folder: `output_dir/name/<time>-<random>`. A finished run is never overwritten, an unfinished one is
    only resumed by the identical experiment, and a folder holding anything else is refused. A damaged
    `last.ckpt` is refused too; `restart` keeps it aside (last.ckpt.damaged-<time>, and the old attempt's other
    checkpoints as <name>.old-<time>) and starts over.
    """
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(exp.output_dir) / exp.name / f"{stamp}-{secrets.token_hex(2)}"
    else:
        run_dir = Path(out)
    if (run_dir / "metrics.json").exists():
        raise UserError(f"--out: {run_dir} already holds a finished run; choose another folder")
    saved = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else None
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        if saved != dump_yaml(exp):
            raise UserError(f"--out: {run_dir} holds an unfinished run of a different config; "
                            f"resume it with its own config.yaml or choose another folder")
        if checkpoint_readable(last):
            return run_dir, last
        if not restart:
            raise UserError(f"--out: {last} is damaged (unreadable); rerun with --restart to keep it aside and "
                            f"start this run over")
        stamp = time.strftime('%Y%m%d-%H%M%S')
        last.rename(last.with_name(f"last.ckpt.damaged-{stamp}"))
        # the old attempt's best checkpoint goes aside too: the new attempt writes its own best.ckpt (else Lightning
        # would write best-v1.ckpt and every reader would load the stale best.ckpt)
        for old in (run_dir / "checkpoints").glob("*.ckpt"):
            old.rename(old.with_name(f"{old.name}.old-{stamp}"))
        return run_dir, None
    if run_dir.is_dir() and any(run_dir.iterdir()) and saved != dump_yaml(exp):
        raise UserError(f"--out: {run_dir} is not empty and holds no run of this experiment; choose an empty or "
                        f"new folder (nothing was written)")
    return run_dir, None


def unfinished(run_dir: Path) -> bool:
    """An attempt at a run that left a last checkpoint and no result: what `make_run_dir` resumes."""
    return (run_dir / "checkpoints" / "last.ckpt").exists() and not (run_dir / "metrics.json").exists()


def create_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {run_dir} ({exc.strerror or exc})") from None


def checkpoint_readable(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, bad pickle, wrong file: all mean it cannot be resumed from
        return False
    return True


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)  # readers never see a half-written file


def write_npz(path: Path, **arrays: Any) -> None:
    """Compressed arrays written whole or not at all, like `write_json`."""
    tmp = path.with_name(path.name + ".tmp.npz")  # savez appends .npz to a name without it
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def trim_checkpoints(run_dir: Path, keep: str) -> None:
    """Shrink a finished run's checkpoints: `best` keeps only the checkpoint whose model the run's metrics report
    (best.ckpt, or last.ckpt for a run tested on its last epoch), without the optimizer and loop states (only
    resuming reads them, and a finished run is never resumed); `none` drops both; `all` keeps them as they are."""
    folder = run_dir / "checkpoints"
    if keep == "all" or not folder.is_dir():
        return
    if keep == "none":
        shutil.rmtree(folder)
        return
    best = tested_file(run_dir)  # a pruned trial has no metrics.json: its best.ckpt is kept
    named = best.name
    for other in {"best.ckpt", "last.ckpt"} - {named}:
        (folder / other).unlink(missing_ok=True)
    if best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)
        resume_only = ("optimizer_states", "lr_schedulers", "loops", "callbacks")
        tmp = best.with_name(f"{named}.tmp")
        torch.save({k: v for k, v in state.items() if k not in resume_only}, tmp)
        os.replace(tmp, best)  # a crash leaves the full checkpoint, never a half-written one
