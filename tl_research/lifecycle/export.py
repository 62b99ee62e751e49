"""`tlr export <run> --format NAME`: a trained run in the format other tools load.

A format is one module in `formats/` with one function under `@export_format(name, help)`: it refuses a run it
cannot hold (one line, before anything is written) and writes its files into a folder. The CLI's choices and this
dispatch read the registry.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tl_research import __version__
from tl_research.errors import UserError
from tl_research.inputs import TextSpec
from tl_research.lifecycle.inference import LoadedRun
from tl_research.registry import Registry, import_package
from tl_research.strategies.lora import merge_lora


@dataclass(frozen=True)
class ExportFormat:
    name: str
    help: str  # what it writes, in one line
    check: Callable[[LoadedRun], None]  # raises UserError when the run cannot be held in this format
    write: Callable[[LoadedRun, Path], list[Path]]  # the files written into the folder


FORMATS: Registry[ExportFormat] = Registry("export format")


def export_format(name: str, help: str, check: Callable[[LoadedRun], None] = lambda loaded: None,
                  ) -> Callable[[Callable[[LoadedRun, Path], list[Path]]], Callable[[LoadedRun, Path], list[Path]]]:
    def add(write: Callable[[LoadedRun, Path], list[Path]]) -> Callable[[LoadedRun, Path], list[Path]]:
        FORMATS.register(name)(ExportFormat(name, help, check, write))
        return write

    return add


def formats() -> list[ExportFormat]:
    """Every export format (each module of formats/ is imported once, on the first call)."""
    import_package("tl_research.lifecycle.formats")
    return [f for _, f in FORMATS.items()]


def merged_model(loaded: LoadedRun) -> torch.nn.Module:
    """A copy of the run's backbone model with any LoRA adapters folded into their base layers: the plain
    architecture a tool without peft loads (the adapters' own format is peft)."""
    model = copy.deepcopy(loaded.model.backbone.model)
    merge_lora(model)
    return model


def plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors accepts: it refuses shared or non-contiguous storage (tied or sliced tensors)."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def preprocessing(loaded: LoadedRun) -> dict[str, Any]:
    """How the run turned raw inputs into model inputs (data/datamodule.py's evaluation collate): images are made
    RGB (grey repeated), squashed to input_size x input_size by PIL's bilinear resize, scaled to [0, 1] and
    normalised; texts are tokenised with truncation at max_length and pooled as the backbone says."""
    spec = loaded.model.backbone.preprocessing
    if isinstance(spec, TextSpec):
        backbone = loaded.model.backbone
        return {"max_length": spec.max_length, "pooling": backbone.pooling, "layers": backbone.layers}
    size = loaded.experiment.data.image_size or spec.input_size
    return {"input_size": [3, size, size], "mean": list(spec.mean), "std": list(spec.std),
            "interpolation": "bilinear", "resize": "squash", "channels": "RGB"}


def metadata(loaded: LoadedRun) -> dict[str, str]:
    """What a safetensors file of an export says about itself (its header's string map): the classes in logit
    order, the preprocessing, the backbone and the checkpoint it came from."""
    return {"format": "pt", "tl_research": __version__, "backbone": loaded.experiment.backbone.name,
            "classes": json.dumps(loaded.classes), "preprocessing": json.dumps(preprocessing(loaded)),
            "run": str(loaded.checkpoint.resolve())}


def export(loaded: LoadedRun, fmt: str, out: Path) -> list[Path]:
    """Write `loaded` in format `fmt` into folder `out`; returns the files written (the class names,
    `classes.json`, with every format)."""
    names = [f.name for f in formats()]
    if fmt not in names:
        raise UserError(f"--format: {fmt!r} is not a format (allowed: {', '.join(names)})")
    chosen = FORMATS.get(fmt, "--format")
    chosen.check(loaded)
    out.mkdir(parents=True, exist_ok=True)
    classes = out / "classes.json"
    classes.write_text(json.dumps(loaded.classes))
    return [*chosen.write(loaded, out), classes]
