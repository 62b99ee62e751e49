"""timm (timm backbones, linear head): `model.safetensors` with the head as the architecture's own classifier, so
`timm.create_model(arch, num_classes=C)` + `load_state_dict` gives the same logits."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from tl_research.errors import UserError
from tl_research.lifecycle.export import export_format, plain
from tl_research.lifecycle.inference import LoadedRun


def check(loaded: LoadedRun) -> None:
    name = loaded.experiment.backbone.name
    if name.partition("/")[0] != "timm":
        raise UserError(f"--format: timm exports timm backbones, not {name} (use hf or safetensors)")
    if loaded.experiment.head.type != "linear" or len(_linear(loaded)) != 1:
        raise UserError("--format: timm holds a single linear classifier; this run's head is an MLP (use safetensors)")


def _linear(loaded: LoadedRun) -> list:
    return [m for m in loaded.model.head if hasattr(m, "weight")]


@export_format("timm", "a timm state dict with the head as the model's own classifier", check)
def write(loaded: LoadedRun, out: Path) -> list[Path]:
    model = loaded.model
    linear = _linear(loaded)[0]
    classifier = model.backbone.model.default_cfg.get("classifier", "classifier")
    state = dict(model.backbone.model.state_dict())
    state[f"{classifier}.weight"] = linear.weight
    state[f"{classifier}.bias"] = linear.bias
    save_file(plain(state), out / "model.safetensors",
              metadata={"architecture": loaded.experiment.backbone.name.partition("/")[2],
                        "num_classes": str(len(loaded.classes))})
    return [out / "model.safetensors"]
