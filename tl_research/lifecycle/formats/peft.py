"""peft (LoRA runs): the adapter as a PEFT folder (`adapter_config.json`, `adapter_model.safetensors`) and the head."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file

from tl_research.errors import UserError
from tl_research.lifecycle.export import export_format, metadata, plain
from tl_research.lifecycle.inference import LoadedRun


def check(loaded: LoadedRun) -> None:
    if getattr(loaded.experiment.freeze.options, "lora", None) is None:
        raise UserError("--format: peft exports LoRA adapters; this run did not train any (freeze.strategy is "
                        f"{loaded.experiment.freeze.strategy})")


@export_format("peft", "the LoRA adapter as a PEFT folder, and the head", check)
def write(loaded: LoadedRun, out: Path) -> list[Path]:
    lora = loaded.experiment.freeze.options.lora
    backbone = loaded.model.backbone
    targets = [n for n, m in backbone.model.named_modules() if isinstance(m, LoraLayer)]
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    config.save_pretrained(str(out))
    # PEFT's saved form: the adapter tensors without the adapter's name (its loader puts the name back)
    adapter = {k.replace(".default.", "."): v for k, v in backbone.model.state_dict().items() if "lora_" in k}
    save_file(plain(adapter), out / "adapter_model.safetensors", metadata=metadata(loaded))
    save_file(plain(loaded.model.head.state_dict()), out / "head.safetensors", metadata=metadata(loaded))
    return [out / "adapter_config.json", out / "adapter_model.safetensors", out / "head.safetensors"]
