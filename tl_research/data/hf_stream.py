"""Streamed Hugging Face datasets (`data.streaming: true`): examples read in one forward pass, never held whole.

A stream cannot be indexed, so its images are a sequence that must be read in increasing order — which is how the
feature cache computes a frozen backbone's rows (sorted pool indices, in batches), once; runs that would read raw
images in any other order (training through the backbone, augmentation, shifted test sets) are refused by the run
(run.py) with one line. The labels (and texts) are read up front in a pass over their columns alone."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tl_research.errors import UserError


class StreamedImages(Sequence):
    """The images of column `column` of streamed splits (one after another) at positions `indices`, decoded to
    uint8 (H, W, 3) arrays in one forward pass; asking for an earlier item starts the stream over (counted in
    `restarts`: the cache never does). `fingerprint` keys the feature cache."""

    def __init__(self, parts: list[Any], column: str, indices: np.ndarray, fingerprint: str) -> None:
        self.parts, self.column, self.indices, self.fingerprint = parts, column, indices, fingerprint
        self.restarts = 0
        self._stream: Iterator[Any] | None = None
        self._next = 0  # position in the concatenated splits of the next example the stream yields

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, indices: np.ndarray) -> StreamedImages:
        return StreamedImages(self.parts, self.column, self.indices[indices], self.fingerprint)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        target = int(self.indices[i])
        if self._stream is None or target < self._next:
            if self._stream is not None:
                self.restarts += 1
            self._stream = itertools.chain.from_iterable(self.parts)
            self._next = 0
        for row in self._stream:
            self._next += 1
            if self._next - 1 == target:
                img = row[self.column]
                if img is None:
                    raise UserError(f"data.image_column: row {target} of {self.column!r} holds no image")
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
        raise UserError(f"data.streaming: the stream ended before example {target} (did the dataset change?)")


def column_values(part: Any, column: str) -> list[Any]:
    """One column of a streamed split, in a pass over that column alone."""
    return [row[column] for row in part.select_columns([column])]


def fingerprint(path: str | None, subset: str | None, data_files: tuple | None, splits: list[str]) -> str:
    """What identifies a stream's content for the feature cache: where it comes from, its splits, and for local
    data files (LoadOptions.data_files) their sizes and modification times (a hub id's content is its id)."""
    files = [] if not data_files else ([f for _, fs in data_files for f in fs] if isinstance(data_files[0], tuple)
                                       else list(data_files))
    h = hashlib.blake2b(repr((path, subset, splits, files)).encode(), digest_size=16)
    for f in files:
        p = Path(f).expanduser()
        if p.is_file():
            h.update(f"{p.stat().st_size}\0{p.stat().st_mtime_ns}\n".encode())
    return f"stream:{h.hexdigest()}"
