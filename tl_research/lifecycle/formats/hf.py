"""hf (HF backbones): the encoder's `save_pretrained` folder with its tokenizer (AutoModel loads it) plus
`head.safetensors`."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from tl_research.errors import UserError
from tl_research.lifecycle.export import export_format, plain
from tl_research.lifecycle.inference import LoadedRun


def check(loaded: LoadedRun) -> None:
    name = loaded.experiment.backbone.name
    if name.partition("/")[0] != "hf":
        raise UserError(f"--format: hf exports HF encoders; {name} is not one (use timm or safetensors)")


@export_format("hf", "the encoder's save_pretrained folder with its tokenizer, and the head", check)
def write(loaded: LoadedRun, out: Path) -> list[Path]:
    backbone = loaded.model.backbone
    backbone.model.save_pretrained(out)
    backbone.preprocessing.tokenizer.save_pretrained(out)
    save_file(plain(loaded.model.head.state_dict()), out / "head.safetensors")
    return [out / "config.json", out / "head.safetensors"]
