"""torchvision (bounded <1): where a file-backed dataset keeps its image paths."""

from __future__ import annotations

from typing import Any


def image_files(dataset: Any) -> list[Any] | None:
    """The image paths of a file-backed torchvision dataset (Flowers102, DTD, … keep them in `_image_files`,
    some in `_images`); torchvision offers them only through `__getitem__`, which decodes every image, and the
    loader needs the paths to decode lazily. None: the dataset keeps neither."""
    return getattr(dataset, "_image_files", None) or getattr(dataset, "_images", None)
