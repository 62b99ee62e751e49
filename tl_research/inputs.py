"""What a backbone needs its inputs to look like: shared by backbones (which declare it) and data (which obeys it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageSpec:
    """How images must look for this backbone (from its pretrained config)."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class TextSpec:
    """How text is tokenised for this backbone."""

    tokenizer: Any
    max_length: int
