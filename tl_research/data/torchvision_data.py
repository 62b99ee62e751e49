"""`data.name: torchvision`: a dataset class of `torchvision.datasets` (`data.path`: FashionMNIST, CIFAR10, SVHN,
Flowers102, DTD …) read offline from `data.root`, laid out as torchvision lays it out. Nothing is downloaded: a
dataset that is not there is one line saying so (download it once with torchvision itself, online).

The dataset's own splits are kept (`predefined`: train, val where it has one, test), so results stay comparable
with the literature. Array-backed datasets (the MNIST family, CIFAR, SVHN, STL10) become one uint8 array; datasets
of image files (Flowers102, DTD, Food101 …) stay files, decoded on access."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from tl_research.adapters import torchvision as torchvision_adapter
from tl_research.data.generic import LazyImages, image_array
from tl_research.data.registry import DatasetInfo, LoadOptions, RawDataset, encode_labels, register_dataset
from tl_research.errors import UserError

SPLITS = ((0, "train"), (1, "val"), (2, "test"))


def _dataset_class(name: str | None) -> Any:
    import torchvision.datasets as tvd  # here: `tlr datasets` must not import torchvision

    if not name:
        raise UserError("data.path: name a torchvision dataset class (e.g. FashionMNIST, CIFAR10, Flowers102)")
    cls = getattr(tvd, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, tvd.VisionDataset)):
        known = sorted(n for n, c in vars(tvd).items() if inspect.isclass(c) and issubclass(c, tvd.VisionDataset)
                       and c is not tvd.VisionDataset)
        raise UserError(f"data.path: {name!r} is not a torchvision dataset (e.g. {', '.join(known[:12])} …)")
    return cls


def _parts(cls: Any, root: Path) -> list[tuple[int, Any]]:
    """(split code, dataset) for each split the class has that is present under `root`."""
    params = inspect.signature(cls.__init__).parameters
    if "train" in params:
        wanted = [(0, {"train": True}), (2, {"train": False})]
    elif "split" in params:
        wanted = [(code, {"split": name}) for code, name in SPLITS]
    else:
        raise UserError(f"data.path: {cls.__name__} has neither a train flag nor splits; save it as an image_folder")
    parts = []
    for code, kwargs in wanted:
        try:
            parts.append((code, cls(str(root), download=False, **kwargs)))
        except ValueError:  # a split this dataset does not have (e.g. no "val")
            continue
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise UserError(f"data.root: no {cls.__name__} under {root} ({exc}); download it once with "
                            f"torchvision.datasets.{cls.__name__}(root, download=True)") from None
    if not any(code == 0 for code, _ in parts):
        raise UserError(f"data.path: {cls.__name__} under {root} has no training split")
    return parts


def _labels(ds: Any) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        value = getattr(ds, attr, None)
        if value is not None:
            return np.asarray(value).astype(np.int64)
    raise UserError(f"data.path: {type(ds).__name__} exposes no labels (targets / labels); save it as an "
                    f"image_folder")


def _inputs(ds: Any, where: str) -> Any:
    """The images of one split: an array for array-backed datasets, the files for file-backed ones."""
    data = getattr(ds, "data", None)
    if data is not None and len(data) == len(ds):
        x = np.asarray(data)
        if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):  # SVHN, STL10: (N, C, H, W)
            x = x.transpose(0, 2, 3, 1)
        return image_array(x, where)
    files = torchvision_adapter.image_files(ds)
    if files is not None and len(files) == len(ds):
        return LazyImages([Path(f) for f in files])
    raise UserError(f"data.path: {type(ds).__name__} keeps its images neither as an array nor as files; save it "
                    f"as an image_folder")


def load_torchvision(root: str | None, opts: LoadOptions = LoadOptions()) -> RawDataset:
    if root is None:
        raise UserError("data.root: the folder torchvision keeps the dataset in (its `root` argument)")
    cls = _dataset_class(opts.path)
    parts = _parts(cls, Path(root).expanduser())
    inputs = [_inputs(ds, f"data.path: {cls.__name__}") for _, ds in parts]
    labels = np.concatenate([_labels(ds) for _, ds in parts])
    classes = list(getattr(parts[0][1], "classes", None) or [])
    if not classes or labels.max() >= len(classes):  # no class names: the labels' own values, in order
        labels, classes = encode_labels(labels)
    if all(isinstance(x, np.ndarray) for x in inputs) and len({x.shape[1:] for x in inputs}) == 1:
        images: Any = np.concatenate(inputs)
    elif all(isinstance(x, LazyImages) for x in inputs):
        images = LazyImages([p for x in inputs for p in x.paths])
    else:
        raise UserError(f"data.path: {cls.__name__}'s splits hold images of different shapes")
    predefined = np.concatenate([np.full(len(ds), code, np.int8) for code, ds in parts])
    return RawDataset(f"torchvision-{cls.__name__}", "image", images, labels, classes, predefined)


register_dataset(DatasetInfo("torchvision", "image", load_torchvision,
                             description="data.path: a torchvision.datasets class; data.root: where torchvision "
                                         "keeps it (offline, never downloaded)"))
