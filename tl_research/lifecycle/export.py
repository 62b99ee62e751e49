"""`tlr export <run> --format NAME`: a trained run in the format other tools load.

A format is one module in `formats/` with one function under `@export_format(name, help)`: it refuses a run it
cannot hold (one line, before anything is written) and writes its files into a folder. The CLI's choices and this
dispatch read the registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tl_research.errors import UserError
from tl_research.lifecycle.inference import LoadedRun
from tl_research.registry import Registry, import_package


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


def plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors accepts: it refuses shared or non-contiguous storage (tied or sliced tensors)."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


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
