"""timm (timm backbones, linear head): a folder `timm.create_model("local-dir:<folder>", pretrained=True)` loads —
`config.json` (architecture, classes, and a `pretrained_cfg` holding the run's input size, mean/std, interpolation
and squash resizing, so timm's own `resolve_data_config` + `create_transform` preprocess as the run did) and
`model.safetensors` with the head as the architecture's own classifier (a LoRA run's adapters merged in)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from tl_research.errors import UserError
from tl_research.lifecycle.export import export_format, merged_model, metadata, plain, preprocessing
from tl_research.lifecycle.inference import LoadedRun


def check(loaded: LoadedRun) -> None:
    name = loaded.experiment.backbone.name
    if name.partition("/")[0] != "timm":
        raise UserError(f"--format: timm exports timm backbones, not {name} (use hf or safetensors)")
    if loaded.experiment.head.type != "linear" or len(_linear(loaded)) != 1:
        raise UserError("--format: timm holds a single linear classifier; this run's head is an MLP (use safetensors)")


def _linear(loaded: LoadedRun) -> list:
    return [m for m in loaded.model.head if hasattr(m, "weight")]


@export_format("timm", "a timm model folder (config.json with the run's preprocessing, model.safetensors)", check)
def write(loaded: LoadedRun, out: Path) -> list[Path]:
    from timm.models import save_for_hf

    model = merged_model(loaded)
    model.reset_classifier(len(loaded.classes))
    linear = _linear(loaded)[0]
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    model.get_submodule(classifier).load_state_dict(linear.state_dict())
    pre = preprocessing(loaded)
    # crop_pct 1 + squash: timm's eval transform then resizes to input_size x input_size and crops nothing
    data_config = {"input_size": tuple(pre["input_size"]), "mean": tuple(pre["mean"]), "std": tuple(pre["std"]),
                   "interpolation": pre["interpolation"], "crop_pct": 1.0, "crop_mode": "squash"}
    save_for_hf(model, str(out), model_config={"label_names": list(loaded.classes)}, data_config=data_config,
                safe_serialization=True)
    # timm writes the tensors without a header map: written again with what the file is and where it came from
    save_file(plain(model.state_dict()), out / "model.safetensors", metadata=metadata(loaded))
    return [out / "config.json", out / "model.safetensors"]
