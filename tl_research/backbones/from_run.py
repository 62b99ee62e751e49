"""A previous run as the starting point of the next: `backbone.weights: <run folder>` loads the trained backbone
from the run's best checkpoint (`weights_only`), after checking that the run trained the same backbone.

Chains such as "train from scratch on half A, then transfer to half B" (Yosinski et al. 2014) are two runs, the
second pointing at the first's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tl_research.errors import UserError
from tl_research.run_folder import CONFIG, is_run_folder, load_tested

if TYPE_CHECKING:  # torch loads with the first checkpoint read (run_folder.load_tested)
    import torch

PREFIX = "backbone.model."
HEAD = "head."


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
        config = yaml.safe_load((folder / CONFIG).read_text()) or {}
        trained = config["backbone"]["name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise UserError(f"backbone.weights: {folder}/{CONFIG} is not a tl_research run config") from None
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
