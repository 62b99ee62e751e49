"""The run folder: the one place that names a run's files, tells which checkpoint its metrics report, and reads and
writes them (atomically: a reader never sees half a file). Everything else asks this module.

    config.yaml       the experiment; an unfinished run resumes only under the identical one
    split.json        the exact examples of each split
    run.json          the run record (code, packages, seeds, weights, command, device)
    metrics.json      the result; written last, so its presence marks a finished run
    predictions.npz   per-example test predictions; predictions_shifted.npz over every `data.eval_shifts` copy
    confusion.csv     rows true class, columns predicted
    checkpoints/      best.ckpt (the best validation epoch) and last.ckpt (resumes a killed run)

A folder is chosen once and never overwritten: a finished run is refused, an unfinished one resumed only by the
identical experiment, a folder holding anything else refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tl_research.errors import UserError
from tl_research.stats import wilson

if TYPE_CHECKING:  # torch loads with the first checkpoint read: backbones/families.py asks this module per config
    pass

CONFIG, SPLIT, RECORD, METRICS = "config.yaml", "split.json", "run.json", "metrics.json"
PREDICTIONS, SHIFTED_PREDICTIONS, CONFUSION = "predictions.npz", "predictions_shifted.npz", "confusion.csv"
CHECKPOINTS, BEST, LAST = "checkpoints", "best", "last"  # checkpoint names without their .ckpt
# a fresh id per attempt of a run, saved into each of its checkpoints: with the epoch and step it tells the
# checkpoint a run's metrics report from a stale one of an earlier attempt that happens to share its epoch
ATTEMPT = "tl_attempt"
IDENTITY = ("checkpoint/file", "checkpoint/attempt", "checkpoint/epoch", "checkpoint/global_step")


def checkpoint(folder: Path, name: str) -> Path:
    """checkpoints/<name>.ckpt of run `folder` (name: BEST or LAST)."""
    return folder / CHECKPOINTS / f"{name}.ckpt"


def finished(folder: Path) -> bool:
    return (folder / METRICS).is_file()


def unfinished(folder: Path) -> bool:
    """An attempt at a run that left a last checkpoint and no result: what `choose` resumes."""
    return checkpoint(folder, LAST).exists() and not (folder / METRICS).exists()


def is_run_folder(path: str | Path) -> bool:
    """A tl_research run folder (its config and checkpoints), finished or not."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / CONFIG).is_file() and (path / CHECKPOINTS).is_dir()


def read_metrics(folder: Path) -> dict[str, Any]:
    """metrics.json of run `folder` ({} when the run has not finished or the file is unreadable)."""
    try:
        return json.loads((folder / METRICS).read_text())
    except (OSError, ValueError):
        return {}


def read_record(folder: Path) -> dict[str, Any]:
    """run.json of run `folder` ({} when absent or unreadable)."""
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def watched(folder: Path) -> list[Path]:
    """The files whose change means run `folder` now holds another model (its metrics and their checkpoint)."""
    return [folder / METRICS, tested_file(folder)]


def choose(run_dir: Path, config_text: str, restart: bool = False) -> tuple[Path, Path | None]:
    """`run_dir` checked for a run of the experiment `config_text` (its config.yaml), and the checkpoint to resume
    when it holds an unfinished attempt of that same experiment. A damaged last checkpoint is refused; `restart`
    keeps it aside (last.ckpt.damaged-<time>, and the old attempt's other checkpoints as <name>.old-<time>) and
    starts over."""
    if finished(run_dir):
        raise UserError(f"--out: {run_dir} already holds a finished run; choose another folder")
    saved = (run_dir / CONFIG).read_text() if (run_dir / CONFIG).exists() else None
    last = checkpoint(run_dir, LAST)
    if last.exists():
        if saved != config_text:
            raise UserError(f"--out: {run_dir} holds an unfinished run of a different config; "
                            f"resume it with its own {CONFIG} or choose another folder")
        if checkpoint_readable(last):
            return run_dir, last
        if not restart:
            raise UserError(f"--out: {last} is damaged (unreadable); rerun with --restart to keep it aside and "
                            f"start this run over")
        stamp = time.strftime('%Y%m%d-%H%M%S')
        last.rename(last.with_name(f"{last.name}.damaged-{stamp}"))
        # the old attempt's best checkpoint goes aside too: the new attempt writes its own best.ckpt (else Lightning
        # would write best-v1.ckpt and every reader would load the stale best.ckpt)
        for old in (run_dir / CHECKPOINTS).glob("*.ckpt"):
            old.rename(old.with_name(f"{old.name}.old-{stamp}"))
        return run_dir, None
    if run_dir.is_dir() and any(run_dir.iterdir()) and saved != config_text:
        raise UserError(f"--out: {run_dir} is not empty and holds no run of this experiment; choose an empty or "
                        f"new folder (nothing was written)")
    return run_dir, None


def new_folder(parent: Path) -> Path:
    """A new run folder's path under `parent`: <time>-<random>."""
    return parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def start(run_dir: Path, config_text: str, split: dict[str, list[int]], record: dict[str, Any]) -> None:
    """What a run writes before it trains: its config, its split's examples and its record."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {run_dir} ({exc.strerror or exc})") from None
    (run_dir / CONFIG).write_text(config_text)
    write_json(run_dir / SPLIT, split)
    write_json(run_dir / RECORD, record)


def finish(run_dir: Path, metrics: dict[str, Any]) -> None:
    """The run's result: written last, it marks the run finished."""
    write_json(run_dir / METRICS, metrics)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)  # readers never see a half-written file


def write_npz(path: Path, **arrays: Any) -> None:
    """Compressed arrays written whole or not at all, like `write_json`."""
    tmp = path.with_name(path.name + ".tmp.npz")  # savez appends .npz to a name without it
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def write_predictions(run_dir: Path, test_indices: Any, predictions: dict[str, Any],
                      classes: list[str] | None = None) -> dict[str, Any]:
    """Per-example test predictions (`index` into the dataset's pool, `label`, `pred`, `prob`), the confusion
    matrix beside them, and the Wilson interval of the test accuracy, the balanced accuracy and each class's
    accuracy they give."""
    write_npz(run_dir / PREDICTIONS, index=np.asarray(test_indices), **predictions)
    label, pred = predictions["label"], predictions["pred"]
    correct, total = int((pred == label).sum()), len(label)
    low, high = wilson(correct, total)
    k = len(classes) if classes else int(max(label.max(), pred.max())) + 1
    names = classes or [str(i) for i in range(k)]
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (label, pred), 1)
    rows = ["true\\pred," + ",".join(names)] + [f"{n}," + ",".join(map(str, r)) for n, r in zip(names, confusion)]
    (run_dir / CONFUSION).write_text("\n".join(rows) + "\n")
    present = confusion.sum(1) > 0
    per_class = {n: float(confusion[i, i] / confusion[i].sum()) for i, n in enumerate(names) if present[i]}
    return {"test/acc_ci_low": low, "test/acc_ci_high": high,
            "test/balanced_acc": float(np.mean(list(per_class.values()))), "test/acc_per_class": per_class}


def new_attempt() -> dict[str, str]:
    """What a run attempt saves into its checkpoints to be told apart (module.run_info)."""
    return {ATTEMPT: secrets.token_hex(8)}


def identity(path: Path, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics.json entries naming checkpoint `path` (memory-mapped: its tensors are not read)."""
    import torch

    state = state if state is not None else torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return dict(zip(IDENTITY, (path.name, state.get(ATTEMPT), state.get("epoch"), state.get("global_step")),
                    strict=True))


def tested_file(folder: Path, metrics: dict[str, Any] | None = None) -> Path:
    """The checkpoint file of run `folder` whose model its metrics report: metrics.json's `checkpoint/file`
    (best.ckpt, or last.ckpt for a run tested on its last epoch); best.ckpt for runs written before it was
    recorded."""
    metrics = read_metrics(folder) if metrics is None else metrics
    return folder / CHECKPOINTS / str(metrics.get("checkpoint/file", f"{BEST}.ckpt"))


def load_tested(folder: Path, option: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of run `folder` that its metrics report, loaded (`weights_only`) and checked to be that
    one: a run that has not finished, a missing file or a checkpoint from another attempt is one line naming
    `option`, never a silent load of a model the run did not report."""
    if not finished(folder):
        raise UserError(f"{option}: {folder} has not finished (no {METRICS}), so no checkpoint of it is a model "
                        f"it reported; finish it (rerun its command) or name a checkpoint file")
    metrics = read_metrics(folder)
    ckpt = tested_file(folder, metrics)
    if not ckpt.is_file():
        raise UserError(f"{option}: {folder} has no {CHECKPOINTS}/{ckpt.name}, the model its metrics report (kept "
                        f"with study.checkpoints: none?)")
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, a truncated file: the checkpoint is unusable either way
        raise UserError(f"{option}: cannot read {ckpt} ({type(exc).__name__})") from None
    recorded = {k: v for k, v in metrics.items() if k in IDENTITY}
    found = identity(ckpt, state)
    if recorded and recorded != found:
        raise UserError(f"{option}: {ckpt} is not the model {folder}/{METRICS} reports (epoch "
                        f"{found['checkpoint/epoch']} of attempt {found['checkpoint/attempt']}, reported: epoch "
                        f"{recorded.get('checkpoint/epoch')} of attempt {recorded.get('checkpoint/attempt')}); "
                        f"it was replaced after the run finished")
    return ckpt, state


def checkpoint_readable(path: Path) -> bool:
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, bad pickle, wrong file: all mean it cannot be resumed from
        return False
    return True


def trim_checkpoints(run_dir: Path, keep: str) -> None:
    """Shrink a finished run's checkpoints: `best` keeps only the checkpoint whose model the run's metrics report
    (best.ckpt, or last.ckpt for a run tested on its last epoch), without the optimizer and loop states (only
    resuming reads them, and a finished run is never resumed); `none` drops both; `all` keeps them as they are."""
    folder = run_dir / CHECKPOINTS
    if keep == "all" or not folder.is_dir():
        return
    if keep == "none":
        shutil.rmtree(folder)
        return
    best = tested_file(run_dir)  # a pruned trial has no metrics.json: its best.ckpt is kept
    for other in {checkpoint(run_dir, BEST), checkpoint(run_dir, LAST)} - {best}:
        other.unlink(missing_ok=True)
    if best.is_file():
        import torch

        state = torch.load(best, map_location="cpu", weights_only=True)
        resume_only = ("optimizer_states", "lr_schedulers", "loops", "callbacks")
        tmp = best.with_name(f"{best.name}.tmp")
        torch.save({k: v for k, v in state.items() if k not in resume_only}, tmp)
        os.replace(tmp, best)  # a crash leaves the full checkpoint, never a half-written one
