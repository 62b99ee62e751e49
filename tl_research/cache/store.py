"""An on-disk store of per-example rows (frozen-prefix outputs) under one key, shared by processes.

Layout: `<dir>/<key digest>/key.json` (the key in words), `lock`, and immutable chunks `chunk-<id>/` holding
`indices.npy` (pool indices), `data.npy` (rows; for ragged rows all of them concatenated) and, for ragged rows,
`offsets.npy`, plus `meta.json` (file sizes and BLAKE2 checksums). A chunk is written in a temporary folder and
renamed into place, so readers never see a partial chunk; the lock makes concurrent processes compute each row once;
a chunk whose files no longer match their sizes or checksums is removed and its rows computed again. Reads are
memory-mapped, so memory stays bounded by what a batch touches.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tl_research.errors import UserError

FILES = ("indices.npy", "data.npy", "offsets.npy")


def digest_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Chunk:
    indices: np.ndarray  # pool indices, one per example
    data: np.ndarray  # (rows, ...) or, ragged, (total rows, width) sliced by offsets
    offsets: np.ndarray | None  # ragged: example i is data[offsets[i]:offsets[i + 1]]

    def row(self, i: int) -> np.ndarray:
        if self.offsets is None:
            return self.data[i]
        return self.data[self.offsets[i]:self.offsets[i + 1]]


# (missing pool indices) -> (rows, offsets or None), rows in the order of the indices
Compute = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


class FeatureStore:
    """Rows of one key: `ensure(indices, compute)` computes the missing ones (once, under the lock) and returns
    a `Rows` view over every chunk."""

    def __init__(self, root: Path, key: dict[str, Any]) -> None:
        self.key = key
        self.digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=12).hexdigest()
        self.folder = Path(root).expanduser() / self.digest
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            key_file = self.folder / "key.json"
            if not key_file.exists():
                _atomic_text(key_file, json.dumps(key, indent=1, sort_keys=True))
        except OSError as exc:
            raise UserError(f"cache.dir: cannot write the feature cache in {root} ({exc.strerror or exc}); "
                            f"set cache.dir (or TLR_CACHE_DIR) to a writable folder, or cache.mode=off") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with (self.folder / "lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def clear(self) -> None:
        """Forget every chunk (cache.mode=refresh)."""
        with self.locked():
            for chunk in self.folder.glob("chunk-*"):
                shutil.rmtree(chunk, ignore_errors=True)

    def ensure(self, indices: np.ndarray, compute: Compute) -> tuple[Rows, int]:
        """Rows for `indices` (computing those no chunk holds); returns the rows and how many were computed."""
        with self.locked():
            chunks = self._chunks()
            have = set(np.concatenate([c.indices for c in chunks]).tolist()) if chunks else set()
            missing = np.array(sorted(set(np.asarray(indices).tolist()) - have), dtype=np.int64)
            if len(missing):
                rows, offsets = compute(missing)
                self._write(missing, rows, offsets)
                chunks = self._chunks()
        return Rows(chunks), len(missing)

    # ------------------------------------------------------------ chunks

    def _chunks(self) -> list[Chunk]:
        out = []
        for folder in sorted(self.folder.glob("chunk-*")):
            chunk = _open_chunk(folder)
            if chunk is None:  # truncated or corrupt: recompute its rows
                shutil.rmtree(folder, ignore_errors=True)
                continue
            out.append(chunk)
        return out

    def _write(self, indices: np.ndarray, rows: np.ndarray, offsets: np.ndarray | None) -> None:
        tmp = self.folder / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            arrays = {"indices.npy": indices, "data.npy": rows}
            if offsets is not None:
                arrays["offsets.npy"] = offsets
            meta = {}
            for name, array in arrays.items():
                with (tmp / name).open("wb") as f:
                    np.save(f, np.ascontiguousarray(array))
                    f.flush()
                    os.fsync(f.fileno())
                meta[name] = {"size": (tmp / name).stat().st_size, "blake2b": digest_file(tmp / name)}
            _atomic_text(tmp / "meta.json", json.dumps(meta))
            os.rename(tmp, self.folder / f"chunk-{uuid.uuid4().hex[:12]}")
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"cache.dir: cannot write the feature cache in {self.folder} "
                            f"({exc.strerror or exc}); free space or set cache.mode=off") from None


_VERIFIED: set[tuple[str, float]] = set()  # chunks whose checksums this process has checked


def _open_chunk(folder: Path) -> Chunk | None:
    """A chunk, memory-mapped, or None when any file is missing, has the wrong size or the wrong checksum."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        for name, want in meta.items():
            if (folder / name).stat().st_size != want["size"]:
                return None
        stamp = (str(folder), (folder / "meta.json").stat().st_mtime)
        if stamp not in _VERIFIED:
            if any(digest_file(folder / name) != want["blake2b"] for name, want in meta.items()):
                return None
            _VERIFIED.add(stamp)
        arrays = {name: np.load(folder / name, mmap_mode="r") for name in meta}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    return Chunk(np.asarray(arrays["indices.npy"]), arrays["data.npy"], arrays.get("offsets.npy"))


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


class Rows:
    """Pool index -> row over a store's chunks (a numpy view of a memory-mapped file)."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks
        top = max((int(c.indices.max()) for c in chunks if len(c.indices)), default=-1) + 1
        # pool index -> chunk and row, as two arrays (-1: not stored)
        self.chunk_of = np.full(top, -1, dtype=np.int64)
        self.row_of = np.full(top, -1, dtype=np.int64)
        for c, chunk in enumerate(chunks):
            self.chunk_of[chunk.indices] = c
            self.row_of[chunk.indices] = np.arange(len(chunk.indices))

    def __len__(self) -> int:
        return int((self.chunk_of >= 0).sum())

    def __contains__(self, index: int) -> bool:
        return 0 <= int(index) < len(self.chunk_of) and self.chunk_of[int(index)] >= 0

    def __getitem__(self, index: int) -> np.ndarray:
        if int(index) not in self:
            raise KeyError(index)
        return self.chunks[int(self.chunk_of[index])].row(int(self.row_of[index]))
