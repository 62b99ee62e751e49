"""`tlr export <run> --format safetensors | timm | hf | peft`: a trained run in the format other tools load.

- safetensors: `model.safetensors` (backbone and head tensors, `backbone.` / `head.` prefixes), `config.yaml`,
  `classes.json`; `load_run` reads the folder back.
- timm (timm backbones, linear head): `model.safetensors` with the head as the architecture's own classifier, so
  `timm.create_model(arch, num_classes=C)` + `load_state_dict` gives the same logits.
- hf (HF backbones): the encoder's `save_pretrained` folder with its tokenizer (AutoModel loads it) plus
  `head.safetensors` and `classes.json`.
- peft (LoRA runs): the adapter as a PEFT folder (`adapter_config.json`, `adapter_model.safetensors`).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file

from tl_research.errors import UserError
from tl_research.lifecycle.inference import LoadedRun

FORMATS = ("safetensors", "timm", "hf", "peft")


def _plain(state: dict) -> dict:
    # safetensors refuses shared or non-contiguous storage (tied or sliced tensors)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def export(loaded: LoadedRun, fmt: str, out: Path) -> list[Path]:
    """Write `loaded` in format `fmt` into folder `out`; returns the files written."""
    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r} is not a format (allowed: {', '.join(FORMATS)})")
    model, exp = loaded.model, loaded.experiment
    family = exp.backbone.name.partition("/")[0]
    if fmt == "timm" and family != "timm":
        raise UserError(f"--format: timm exports timm backbones, not {exp.backbone.name} (use hf or safetensors)")
    if fmt == "hf" and family != "hf":
        raise UserError(f"--format: hf exports HF encoders; {exp.backbone.name} is not one (use timm or safetensors)")
    if fmt == "peft" and exp.freeze.strategy != "lora":
        raise UserError("--format: peft exports LoRA adapters; this run did not train any (freeze.strategy is "
                        f"{exp.freeze.strategy})")
    out.mkdir(parents=True, exist_ok=True)
    classes = out / "classes.json"
    classes.write_text(json.dumps(loaded.classes))
    if fmt == "safetensors":
        state = {f"backbone.{k}": v for k, v in model.backbone.model.state_dict().items()}
        state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
        save_file(_plain(state), out / "model.safetensors")
        (out / "config.yaml").write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
        return [out / "model.safetensors", out / "config.yaml", classes]
    if fmt == "timm":
        return [_timm(loaded, out), classes]
    if fmt == "hf":
        model.backbone.model.save_pretrained(out)
        model.backbone.preprocessing.tokenizer.save_pretrained(out)
        save_file(_plain(model.head.state_dict()), out / "head.safetensors")
        return [out / "config.json", out / "head.safetensors", classes]
    return [*_peft(loaded, out), classes]


def _timm(loaded: LoadedRun, out: Path) -> Path:
    model = loaded.model
    linear = [m for m in model.head if hasattr(m, "weight")]
    if len(linear) != 1 or loaded.experiment.head.type != "linear":
        raise UserError("--format: timm holds a single linear classifier; this run's head is an MLP (use safetensors)")
    classifier = model.backbone.model.default_cfg.get("classifier", "classifier")
    state = dict(model.backbone.model.state_dict())
    state[f"{classifier}.weight"] = linear[0].weight
    state[f"{classifier}.bias"] = linear[0].bias
    save_file(_plain(state), out / "model.safetensors",
              metadata={"architecture": loaded.experiment.backbone.name.partition("/")[2],
                        "num_classes": str(len(loaded.classes))})
    return out / "model.safetensors"


def _peft(loaded: LoadedRun, out: Path) -> list[Path]:
    lora = loaded.experiment.freeze.options.lora
    backbone = loaded.model.backbone
    targets = [n for n, m in backbone.model.named_modules() if isinstance(m, LoraLayer)]
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    config.save_pretrained(str(out))
    # PEFT's saved form: the adapter tensors without the adapter's name (its loader puts the name back)
    adapter = {k.replace(".default.", "."): v for k, v in backbone.model.state_dict().items() if "lora_" in k}
    save_file(_plain(adapter), out / "adapter_model.safetensors")
    save_file(_plain(loaded.model.head.state_dict()), out / "head.safetensors")
    return [out / "adapter_config.json", out / "adapter_model.safetensors", out / "head.safetensors"]
