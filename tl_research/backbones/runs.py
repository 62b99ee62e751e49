"""A previous run as the starting point of the next: `backbone.weights: <run folder>` loads the trained backbone
from the run's best checkpoint (`weights_only`), after checking that the run trained the same backbone.

Chains such as "train from scratch on half A, then transfer to half B" (Yosinski et al. 2014) are two runs, the
second pointing at the first's folder.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tl_research.errors import UserError

if TYPE_CHECKING:  # torch loads with the first checkpoint read: families.py reads this module for every config
    import torch

PREFIX = "backbone.model."
HEAD = "head."
# a fresh id per attempt of a run, saved into each of its checkpoints: with the epoch and step it tells the
# checkpoint a run's metrics report from a stale one of an earlier attempt that happens to share its epoch
ATTEMPT = "tl_attempt"
IDENTITY = ("checkpoint/file", "checkpoint/attempt", "checkpoint/epoch", "checkpoint/global_step")


def new_attempt() -> dict[str, str]:
    """What a run attempt saves into its checkpoints to be told apart (module.run_info)."""
    return {ATTEMPT: secrets.token_hex(8)}


def identity(path: Path, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics.json entries naming checkpoint `path` (memory-mapped: its tensors are not read)."""
    import torch

    state = state if state is not None else torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return dict(zip(IDENTITY, (path.name, state.get(ATTEMPT), state.get("epoch"), state.get("global_step")),
                    strict=True))


def _metrics(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def tested_file(folder: Path, metrics: dict[str, Any] | None = None) -> Path:
    """The checkpoint file of run `folder` whose model its metrics report: metrics.json's `checkpoint/file`
    (best.ckpt, or last.ckpt for a run tested on its last epoch); best.ckpt for runs written before it was
    recorded."""
    metrics = _metrics(folder) if metrics is None else metrics
    return folder / "checkpoints" / str(metrics.get("checkpoint/file", "best.ckpt"))


def load_tested(folder: Path, option: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of run `folder` that its metrics report, loaded (`weights_only`) and checked to be that
    one: a run that has not finished, a missing file or a checkpoint from another attempt is one line naming
    `option`, never a silent load of a model the run did not report."""
    if not (folder / "metrics.json").is_file():
        raise UserError(f"{option}: {folder} has not finished (no metrics.json), so no checkpoint of it is a model "
                        f"it reported; finish it (rerun its command) or name a checkpoint file")
    metrics = _metrics(folder)
    ckpt = tested_file(folder, metrics)
    if not ckpt.is_file():
        raise UserError(f"{option}: {folder} has no checkpoints/{ckpt.name}, the model its metrics report (kept "
                        f"with study.checkpoints: none?)")
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, a truncated file: the checkpoint is unusable either way
        raise UserError(f"{option}: cannot read {ckpt} ({type(exc).__name__})") from None
    recorded = {k: v for k, v in metrics.items() if k in IDENTITY}
    found = identity(ckpt, state)
    if recorded and recorded != found:
        raise UserError(f"{option}: {ckpt} is not the model {folder}/metrics.json reports (epoch "
                        f"{found['checkpoint/epoch']} of attempt {found['checkpoint/attempt']}, reported: epoch "
                        f"{recorded.get('checkpoint/epoch')} of attempt {recorded.get('checkpoint/attempt')}); "
                        f"it was replaced after the run finished")
    return ckpt, state


def is_run_folder(weights: str) -> bool:
    path = Path(weights).expanduser()
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def load_run_head(head: torch.nn.Module, weights: str | None) -> None:
    """Copy the head of run folder `weights` into `head` (`head.from_run`); it must have the same shapes."""
    if not weights or not is_run_folder(weights):
        raise UserError(f"head.from_run: backbone.weights must be a run folder (got {weights!r})")
    state = load_tested(Path(weights).expanduser().resolve(), "head.from_run")[1]["state_dict"]
    tensors = {k.removeprefix(HEAD): v for k, v in state.items() if k.startswith(HEAD)}
    mine = head.state_dict()
    if {k: tuple(v.shape) for k, v in tensors.items()} != {k: tuple(v.shape) for k, v in mine.items()}:
        shapes = {k: tuple(v.shape) for k, v in tensors.items() if k.endswith("weight")}
        raise UserError(f"head.from_run: the run's head {shapes} does not fit this run's head "
                        f"{ {k: tuple(v.shape) for k, v in mine.items() if k.endswith('weight')} } "
                        f"(same head.type and classes needed)")
    head.load_state_dict(tensors)


def run_backbone_state(weights: str, name: str) -> tuple[dict[str, torch.Tensor], str]:
    """The trained backbone tensors of run folder `weights` (keys as in the backbone's `model`) and the weights
    source to record; the run must have trained backbone `name`."""
    folder = Path(weights).expanduser().resolve()
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        trained = config["backbone"]["name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise UserError(f"backbone.weights: {folder}/config.yaml is not a tl_research run config") from None
    if trained != name:
        raise UserError(f"backbone.weights: the run at {folder} trained {trained}, not {name}")
    if (config.get("freeze") or {}).get("strategy") == "lora":
        raise UserError(f"backbone.weights: the run at {folder} trained LoRA adapters; start from its merged export "
                        f"(freeze.lora.merge: true writes export/backbone.pth)")
    ckpt, loaded = load_tested(folder, "backbone.weights")
    state = loaded["state_dict"]
    tensors = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    if not tensors:
        raise UserError(f"backbone.weights: {ckpt} holds no backbone tensors")
    return tensors, f"run:{folder}"
