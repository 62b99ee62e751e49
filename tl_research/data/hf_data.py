"""`data.name: hf`: anything `datasets.load_dataset` accepts (`data.path`: a hub id, a local dataset folder or a
loader name such as `parquet` / `imagefolder` / `csv` with `data.data_files`), and folders written by
`save_to_disk`.

The dataset's splits named by `data.splits` (default: train, validation/valid/val/dev, test) are kept as the pool's
predefined split; a missing val or test split is carved out of train with the seeded stratified split. Columns are
detected from the features (exactly one Image or text column, one ClassLabel) unless named. Images stay in the
memory-mapped Arrow table and are decoded on access, so a dataset larger than memory trains as any other; streaming
(`IterableDataset`) is not supported. Nothing is fetched unless `data.path` is a hub id and the machine is online
(`HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1` read a pre-filled cache only)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tl_research.adapters import datasets as datasets_adapter
from tl_research.data.hf_stream import StreamedImages, column_values, fingerprint
from tl_research.data.registry import DatasetInfo, LoadOptions, RawDataset, encode_labels, register_dataset
from tl_research.errors import UserError, optional_import

ROLES = {"train": 0, "val": 1, "test": 2}
DEFAULT_SPLITS = {"train": ("train",), "val": ("validation", "valid", "val", "dev"), "test": ("test",)}


class HFImages(Sequence):
    """The images of column `column` of an Arrow-backed dataset at `indices`, decoded on access to uint8
    (H, W, 3) arrays. `fingerprint` (the dataset's) keys the feature cache."""

    def __init__(self, table: Any, column: str, indices: np.ndarray, fingerprint: str | None = None) -> None:
        self.table, self.column, self.indices = table.select_columns([column]), column, indices
        self.fingerprint = fingerprint or f"{datasets_adapter.fingerprint(table)}:{column}"

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, indices: np.ndarray) -> HFImages:
        """The images at `indices` of this sequence (a class subset), still keyed by the dataset's fingerprint."""
        return HFImages(self.table, self.column, self.indices[indices], self.fingerprint)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        img = self.table[int(self.indices[i])][self.column]
        if img is None:
            raise UserError(f"data.image_column: row {int(self.indices[i])} of {self.column!r} holds no image")
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _open(opts: LoadOptions) -> dict[str, Any]:
    """The dataset's splits by name."""
    import datasets  # here: `tlr datasets` and the other loaders must not import pyarrow

    datasets.disable_progress_bars()  # the run prints its own progress
    if not opts.path:
        raise UserError("data.path: a hub id, a save_to_disk folder, or a loader (parquet, csv, imagefolder) "
                        "with data.data_files")
    local = Path(opts.path).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            if opts.subset or opts.data_files:
                raise UserError("data.subset: a save_to_disk folder holds one dataset; leave data.subset and "
                                "data.data_files out")
            if opts.streaming:
                raise UserError("data.streaming: a save_to_disk folder is read memory-mapped, never held whole; "
                                "streaming is for hub ids and data files")
            found = datasets.load_from_disk(str(local))
        else:
            files = opts.data_files
            data_files = (None if not files else {k: list(v) for k, v in files} if isinstance(files[0], tuple)
                          else list(files))
            found = datasets.load_dataset(opts.path, opts.subset, data_files=data_files, streaming=opts.streaming)
    except UserError:
        raise
    except ConnectionError as exc:
        raise UserError(f"data.path: {opts.path!r} is neither a local dataset nor reachable on the Hugging Face Hub "
                        f"({exc}); fetch it once online, or give a save_to_disk folder") from None
    except (FileNotFoundError, ValueError, OSError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise UserError(f"data.path: cannot load {opts.path!r} ({str(exc).splitlines()[0] if str(exc) else exc!r})"
                        ) from None
    return {"train": found} if isinstance(found, (datasets.Dataset, datasets.IterableDataset)) else dict(found)


def _labelled(values: list[Any]) -> bool:
    """Whether a split has labels (GLUE-style test splits hold -1 everywhere)."""
    return any(v is not None and not (isinstance(v, int) and v < 0) for v in values)


def _roles(parts: dict[str, Any], wanted: dict[str, str] | None, labels: Callable[[str], list[Any]],
           ) -> dict[str, str]:
    """Which split of the dataset is train / val / test."""
    names = ", ".join(parts)
    if wanted:
        for role, split in wanted.items():
            if role not in ROLES:
                raise UserError(f"data.splits: {role!r} is not a role (train, val, test)")
            if split not in parts:
                raise UserError(f"data.splits.{role}: the dataset has no split {split!r} (splits: {names})")
            if not _labelled(labels(split)):
                raise UserError(f"data.splits.{role}: split {split!r} has no labels")
        if "train" not in wanted:
            raise UserError(f"data.splits: name the training split (splits: {names})")
        return dict(wanted)
    roles = {role: next((s for s in options if s in parts), None) for role, options in DEFAULT_SPLITS.items()}
    if roles["train"] is None:
        if len(parts) != 1:
            raise UserError(f"data.splits: no split is called train; name the roles, e.g. data.splits: "
                            f"{{train: ..., test: ...}} (splits: {names})")
        roles["train"] = next(iter(parts))
    for role, split in list(roles.items()):
        if split is not None and role != "train" and not _labelled(labels(split)):
            warnings.warn(f"data.splits: split {split!r} has no labels; the {role} split is carved out of train",
                          UserWarning, stacklevel=2)
            roles[role] = None
    return {role: split for role, split in roles.items() if split is not None}


def _columns(features: dict[str, Any], opts: LoadOptions) -> tuple[str, str, str]:
    """(modality, input column, label column): named ones checked, the rest detected from the feature types."""
    import datasets

    listed = ", ".join(f"{c} ({type(f).__name__})" for c, f in features.items())
    for key, col in (("image_column", opts.image_column), ("text_column", opts.text_column),
                     ("label_column", opts.label_column)):
        if col is not None and col not in features:
            raise UserError(f"data.{key}: the dataset has no column {col!r} (columns: {listed})")
    if opts.image_column and opts.text_column:
        raise UserError("data.image_column: set data.image_column or data.text_column, not both")
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    texts = [c for c, f in features.items() if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")]
    classes = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if opts.image_column or (not opts.text_column and len(images) == 1):
        modality, column = "image", opts.image_column or images[0]
        if not isinstance(features[column], datasets.Image):
            raise UserError(f"data.image_column: column {column!r} holds {type(features[column]).__name__}, "
                            f"not images (columns: {listed})")
    elif opts.text_column or (not images and len(texts) == 1):
        modality, column = "text", opts.text_column or texts[0]
        if column not in texts:
            raise UserError(f"data.text_column: column {column!r} does not hold strings (columns: {listed})")
    else:
        raise UserError(f"data.image_column: say which column holds the inputs (data.image_column or "
                        f"data.text_column; columns: {listed})")
    label = opts.label_column or (classes[0] if len(classes) == 1 else None)
    if label is None:
        raise UserError(f"data.label_column: say which column holds the labels (columns: {listed})")
    if not isinstance(features[label], (datasets.ClassLabel, datasets.Value)):
        raise UserError(f"data.label_column: column {label!r} holds {type(features[label]).__name__}, not one "
                        f"label per example (columns: {listed})")
    if label == column:
        raise UserError(f"data.label_column: {label!r} is the input column")
    return modality, column, label


def load_hf(root: str | None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    datasets = optional_import("datasets", "data.name: hf", "hf")

    if root is not None:
        raise UserError("data.root: data.name hf reads data.path (a hub id, a dataset folder or a loader name)")
    parts = _open(opts)
    features = next(iter(parts.values())).features
    if features is None:  # a stream that declares no features
        raise UserError("data.streaming: the stream declares no column types; load it once without streaming")
    modality, column, label = _columns(dict(features), opts)
    read: dict[str, list[Any]] = {}  # each split's labels, read once

    def labels_of(split: str) -> list[Any]:
        if split not in read:
            part = parts[split]
            read[split] = column_values(part, label) if opts.streaming else list(part[label])
        return read[split]

    roles = _roles(parts, dict(opts.splits) if opts.splits else None, labels_of)
    chosen = [(ROLES[role], split) for role, split in roles.items()]
    predefined = np.concatenate([np.full(len(labels_of(split)), code, np.int8) for code, split in chosen])
    raw_labels = [y for _, split in chosen for y in labels_of(split)]
    feature = features[label]
    keep = np.asarray([y is not None and not (isinstance(y, int) and y < 0) for y in raw_labels])
    if not keep.all():
        warnings.warn(f"data.label_column: {int((~keep).sum())} rows without a label are left out", UserWarning,
                      stacklevel=2)
    idx = np.flatnonzero(keep)
    if isinstance(feature, datasets.ClassLabel):
        labels, classes = np.asarray(raw_labels, dtype=object)[idx].astype(np.int64), list(feature.names)
    else:
        labels, classes = encode_labels([raw_labels[i] for i in idx])
    name = f"hf-{Path(opts.path or '').name or opts.path}" + (f"-{opts.subset}" if opts.subset else "")
    splits = [split for _, split in chosen]
    inputs = (_streamed(parts, splits, modality, column, idx, opts) if opts.streaming
              else _arrow(parts, splits, modality, column, label, idx))
    return RawDataset(name, modality, inputs, labels, classes, predefined[idx])


def _arrow(parts: dict[str, Any], splits: list[str], modality: str, column: str, label: str, idx: np.ndarray,
           ) -> Any:
    """The kept examples' inputs of memory-mapped splits: lazily decoded images, or the texts."""
    import datasets

    try:
        table = datasets.concatenate_datasets([parts[s].select_columns([column, label]) for s in splits])
    except ValueError as exc:
        raise UserError(f"data.splits: the splits' columns differ ({exc})") from None
    if modality == "image":
        return HFImages(table, column, idx)
    texts = list(table[column])
    return ["" if texts[i] is None else str(texts[i]) for i in idx]


def _streamed(parts: dict[str, Any], splits: list[str], modality: str, column: str, idx: np.ndarray,
              opts: LoadOptions) -> Any:
    """The kept examples' inputs of streamed splits: images read in one forward pass, or the texts (read now)."""
    if modality == "image":
        return StreamedImages([parts[s].select_columns([column]) for s in splits], column, idx,
                              fingerprint(opts.path, opts.subset, opts.data_files, splits))
    texts = [t for s in splits for t in column_values(parts[s], column)]
    return ["" if texts[i] is None else str(texts[i]) for i in idx]


register_dataset(DatasetInfo("hf", "image or text", load_hf, module="datasets", hint="pip install datasets",
                             description="data.path: a Hugging Face dataset (hub id, save_to_disk folder, or "
                                         "parquet/csv/imagefolder with data.data_files)"))
