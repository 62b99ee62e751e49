"""A previous run as the starting point of the next: `backbone.weights: <run folder>` loads the trained backbone
from the run's best checkpoint (`weights_only`), after checking that the run trained the same backbone.

Chains such as "train from scratch on half A, then transfer to half B" (Yosinski et al. 2014) are two runs, the
second pointing at the first's folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from tl_research.errors import UserError

PREFIX = "backbone.model."
HEAD = "head."


def is_run_folder(weights: str) -> bool:
    path = Path(weights).expanduser()
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def checkpoint_of(folder: Path) -> Path:
    """The checkpoint a run was tested with (best.ckpt)."""
    ckpt = folder / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise UserError(f"backbone.weights: {folder} has no checkpoints/best.ckpt (a run that never finished an "
                        f"epoch?)")
    return ckpt


def load_run_head(head: torch.nn.Module, weights: str | None) -> None:
    """Copy the head of run folder `weights` into `head` (`head.from_run`); it must have the same shapes."""
    if not weights or not is_run_folder(weights):
        raise UserError(f"head.from_run: backbone.weights must be a run folder (got {weights!r})")
    state = _checkpoint_state(checkpoint_of(Path(weights).expanduser().resolve()))
    tensors = {k.removeprefix(HEAD): v for k, v in state.items() if k.startswith(HEAD)}
    mine = head.state_dict()
    if {k: tuple(v.shape) for k, v in tensors.items()} != {k: tuple(v.shape) for k, v in mine.items()}:
        shapes = {k: tuple(v.shape) for k, v in tensors.items() if k.endswith("weight")}
        raise UserError(f"head.from_run: the run's head {shapes} does not fit this run's head "
                        f"{ {k: tuple(v.shape) for k, v in mine.items() if k.endswith('weight')} } "
                        f"(same head.type and classes needed)")
    head.load_state_dict(tensors)


def _checkpoint_state(ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as exc:  # unpickling errors, a truncated file: the checkpoint is unusable either way
        raise UserError(f"backbone.weights: cannot read {ckpt} ({type(exc).__name__})") from None


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
    ckpt = checkpoint_of(folder)
    state = _checkpoint_state(ckpt)
    tensors = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    if not tensors:
        raise UserError(f"backbone.weights: {ckpt} holds no backbone tensors")
    return tensors, f"run:{folder}"
