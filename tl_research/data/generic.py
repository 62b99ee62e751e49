"""Users' own data with no code: an image-folder tree, a CSV/TSV file of texts, an npz file of arrays."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tl_research.data.registry import DatasetInfo, LoadOptions, RawDataset, encode_labels, register_dataset
from tl_research.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_DIRS = {"train": 0, "val": 1, "test": 2}


def _need_root(root: str | None, what: str) -> Path:
    if root is None:
        raise UserError(f"data.root: this dataset reads {what}; set data.root")
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"data.root: {path} does not exist")
    return path


class LazyImages(Sequence):
    """Image files decoded on access to uint8 (H, W, 3) arrays; a file that fails to decode is named."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        try:
            with Image.open(self.paths[i]) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
        except OSError as exc:
            raise UserError(f"{self.paths[i]}: unreadable image ({exc})") from None


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as img:
            img.verify()  # header and structure, without decoding every pixel
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise UserError(f"{path}: unreadable image ({type(exc).__name__})") from None


def load_image_folder(root: str | None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    """`root/<class>/*.png`, or `root/{train,val,test}/<class>/*` for splits the data ships with."""
    folder = _need_root(root, "a folder with one sub-folder per class")
    if not folder.is_dir():
        raise UserError(f"data.root: {folder} is not a folder")
    splits = {name: folder / name for name in SPLIT_DIRS if (folder / name).is_dir()}
    parts = splits if "train" in splits else {"all": folder}
    classes = sorted({d.name for p in parts.values() for d in p.iterdir() if d.is_dir()})
    if not classes:
        raise UserError(f"data.root: {folder} has no class sub-folders")
    paths, labels, marks = [], [], []
    for part, pdir in parts.items():
        for c, name in enumerate(classes):
            cdir = pdir / name
            if not cdir.is_dir():
                continue
            files = sorted(f for f in cdir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"data.root: class folder {cdir} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for f in files:
                _check_image(f)
            paths += files
            labels += [c] * len(files)
            marks += [SPLIT_DIRS.get(part, -1)] * len(files)
    predefined = np.asarray(marks, dtype=np.int8) if "train" in splits else None
    return RawDataset(folder.name, "image", LazyImages(paths), np.asarray(labels, np.int64), classes, predefined)


def load_csv_text(root: str | None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    """A CSV (or .tsv) file with a text column and a label column (names from data.text_column/label_column)."""
    path = _need_root(root, "a CSV or TSV file")
    opts = dataclasses.replace(opts, text_column=opts.text_column or "text", label_column=opts.label_column or "label")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            columns = reader.fieldnames or []
            for col, key in ((opts.text_column, "text_column"), (opts.label_column, "label_column")):
                if col not in columns:
                    raise UserError(f"data.{key}: {path} has no column {col!r} (columns: {', '.join(columns)})")
            rows = [(r[opts.text_column], r[opts.label_column]) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: unreadable CSV file ({exc})") from None
    rows = [(t, y) for t, y in rows if t and y not in (None, "")]
    if not rows:
        raise UserError(f"{path}: no rows with both a text and a label")
    labels, classes = encode_labels([y for _, y in rows])
    return RawDataset(path.stem, "text", [t for t, _ in rows], labels, classes)


def load_npz(root: str | None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    """An .npz with images (N, H, W[, C]) (uint8, or floats in [0, 1] or [0, 255]) or texts, and labels."""
    path = _need_root(root, "an .npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            for key, name in ((opts.x_key, "x_key"), (opts.y_key, "y_key")):
                if key not in z.files:
                    raise UserError(f"data.{name}: {path} has no array {key!r} (arrays: {', '.join(z.files)})")
            x, y = z[opts.x_key], z[opts.y_key]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable npz file ({exc})") from None
    if len(x) != len(y):
        raise UserError(f"{path}: {len(x)} inputs but {len(y)} labels")
    labels, classes = encode_labels(y)
    if x.dtype.kind in "US":
        return RawDataset(path.stem, "text", [str(t) for t in x], labels, classes)
    return RawDataset(path.stem, "image", image_array(x, f"data.x_key: {path}:{opts.x_key}"), labels, classes)


def image_array(x: np.ndarray, where: str) -> np.ndarray:
    """Images (N, H, W[, C]) of an .npz as uint8: floats in [0, 1] are scaled, others clipped to [0, 255]. A wrong
    shape, an empty array, a non-numeric dtype or NaN/inf pixels are refused (`where` names the array), for
    training (`data.name: npz`) and prediction alike."""
    if x.ndim not in (3, 4) or len(x) == 0:
        raise UserError(f"{where} has shape {x.shape}; images need (N, H, W[, C]) with N >= 1")
    if x.dtype.kind not in "uif":
        raise UserError(f"{where} has dtype {x.dtype}; images need numbers")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise UserError(f"{where} holds {int((~np.isfinite(x)).sum())} NaN/inf values")
    if x.dtype != np.uint8:
        x = np.clip(x * (255.0 if x.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return x


for _info in [
    DatasetInfo("image_folder", "image", load_image_folder,
                description="data.root: <class>/* images, or {train,val,test}/<class>/*"),
    DatasetInfo("csv_text", "text", load_csv_text,
                description="data.root: a .csv/.tsv file; data.text_column, data.label_column"),
    DatasetInfo("npz", "image", load_npz, description="data.root: an .npz file; arrays data.x_key, data.y_key"),
]:
    register_dataset(_info)
