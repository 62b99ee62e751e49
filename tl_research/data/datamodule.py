"""A LightningDataModule over a split pool, with preprocessing taken from the backbone."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from tl_research.data.fewshot import fraction, k_shot
from tl_research.data.options import DataConfig
from tl_research.data.registry import LoadOptions, RawDataset, load_dataset, restrict_classes
from tl_research.data.shifts import parse_shift
from tl_research.data.splits import Split, balanced_take, split_pool, vtab1k_split
from tl_research.errors import UserError
from tl_research.inputs import ImageSpec, TextSpec


class EpochShuffle(Sampler[int]):
    """A fresh permutation per epoch from (seed, epoch) alone: Lightning calls `set_epoch`, so a resumed run
    sees exactly the batches an uninterrupted one would (a plain RandomSampler draws from the global RNG)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())


class IndexedDataset(Dataset):
    """Items `inputs[i], labels[i]` for i in `indices` (no copies of the pool)."""

    def __init__(self, inputs: Any, labels: np.ndarray, indices: np.ndarray) -> None:
        self.inputs, self.labels, self.indices = inputs, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        j = int(self.indices[i])
        return self.inputs[j], int(self.labels[j])


@dataclass(frozen=True)
class ImageCollate:
    """uint8 images (H, W[, C]) -> normalised float (B, 3, size, size); grey images are repeated to 3 channels.

    `augment` (train loaders only) takes a float (3, H, W) image in [0, 1] to a (3, size, size) one; `shift` (a
    shifted test set, see shifts.py) corrupts the resized image, seeded by the image's bytes."""

    spec: ImageSpec
    size: int
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    shift: Callable[[torch.Tensor, bytes], torch.Tensor] | None = None

    def _one(self, img: Any) -> torch.Tensor:
        x = self._resized(img)
        return x if self.shift is None else self.shift(x, np.asarray(img).tobytes())

    def _resized(self, img: Any) -> torch.Tensor:
        a = np.asarray(img, dtype=np.uint8)
        if a.ndim == 3:
            a = a[..., 0] if a.shape[-1] == 1 else a[..., :3]  # grey stays 2-D; alpha is dropped
        if self.augment is None and a.shape[:2] != (self.size, self.size):
            # PIL's bilinear resize of the uint8 image, as torchvision's and timm's transforms do on PIL images: an
            # exported model preprocessed by timm's own defaults then sees the pixels the run saw
            a = np.asarray(Image.fromarray(a).resize((self.size, self.size), Image.BILINEAR))
        x = torch.from_numpy(a.copy()).float().div_(255.0)
        x = x.expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)
        return x if self.augment is None else self.augment(x)

    def __call__(self, items: list[tuple[Any, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([self._one(img) for img, _ in items])
        mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std).view(1, 3, 1, 1)
        return (x - mean) / std, torch.tensor([y for _, y in items])


def build_augment(size: int, random_resized_crop: bool = False, crop_scale: float = 0.5, hflip: bool = False,
                  rotation: float = 0.0, shear: float = 0.0, zoom: float = 0.0,
                  translate: float = 0.0) -> Callable | None:
    """torchvision v2 train transforms on float tensors (None when everything is off)."""
    steps: list[Any] = []
    if rotation or shear or zoom or translate:
        steps.append(v2.RandomAffine(degrees=rotation, shear=shear or None,
                                     translate=(translate, translate) if translate else None,
                                     scale=(1 - zoom, 1 + zoom) if zoom else None))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if not steps and not random_resized_crop:
        return None
    steps.append(v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True) if random_resized_crop
                 else v2.Resize((size, size), antialias=True))
    return v2.Compose(steps)


@dataclass(frozen=True)
class TextCollate:
    """Texts -> padded tokenizer output (dynamic padding to the longest text, capped at max_length)."""

    spec: TextSpec

    def __call__(self, items: list[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        enc = self.spec.tokenizer([t for t, _ in items], padding=True, truncation=True,
                                  max_length=self.spec.max_length, return_tensors="pt")
        return dict(enc), torch.tensor([y for _, y in items])


class TransferDataModule(L.LightningDataModule):
    """Train/val/test loaders over index sets of one pool."""

    def __init__(self, raw: RawDataset, split: Split, collate: Callable, *, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 train_collate: Callable | None = None, subset_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.raw, self.split, self.collate, self.seed = raw, split, collate, seed
        self.train_collate = train_collate or collate
        self.subset_info = subset_info or {}
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        inputs = torch.from_numpy(raw.inputs) if isinstance(raw.inputs, np.ndarray) else raw.inputs
        self.sets = {k: IndexedDataset(inputs, raw.labels, getattr(split, k)) for k in ("train", "val", "test")}

    @property
    def num_classes(self) -> int:
        return len(self.raw.classes)

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        sampler = EpochShuffle(len(self.sets[part]), self.seed) if shuffle else None
        return DataLoader(self.sets[part], batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          sampler=sampler, collate_fn=self.train_collate if shuffle else self.collate,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def tensors(self, part: str) -> tuple[Any, torch.Tensor]:
        """The whole of `part` as one collated batch (for full-batch solvers)."""
        items = [self.sets[part][i] for i in range(len(self.sets[part]))]
        return self.collate(items)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def _hashable(value: Any) -> Any:
    """Mappings and lists as tuples (a loaded pool is reused by its options)."""
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def load_options(cfg: DataConfig) -> LoadOptions:
    """The loader's options of the data section: each field of LoadOptions is the data section's key of that name
    (tests/data/test_data.py checks that they are the section's loader options, no more, no fewer)."""
    return LoadOptions(**{f.name: _hashable(getattr(cfg, f.name)) for f in dataclasses.fields(LoadOptions)})


def load_data(cfg: DataConfig, modality: str) -> RawDataset:
    """The whole labelled pool of `cfg.name` (only `cfg.classes`, when set), checked against the backbone's
    modality."""
    raw = load_dataset(cfg.name, cfg.root, load_options(cfg), **cfg.options)
    if raw.modality != modality:
        raise UserError(f"data.name: {cfg.name} holds {raw.modality} data but the backbone takes {modality}")
    for key, value in (("data.eval_shifts", cfg.eval_shifts), ("data.shift", cfg.shift)):
        if value and raw.modality != "image":
            raise UserError(f"{key}: shifts are image corruptions; {cfg.name} holds text")
    return restrict_classes(raw, cfg.classes) if cfg.classes else raw


def select(raw: RawDataset, cfg: DataConfig) -> tuple[Split, dict[str, Any]]:
    """Split the pool with `split_seed`, then take k shots / a share (seeded by `subset_seed`, default the split
    seed) and the stratified caps; returns the split and what the subset looks like (for metrics.json)."""
    if cfg.shots is not None and cfg.fraction is not None:
        raise UserError("data.shots: set data.shots or data.fraction, not both")
    split_seed = cfg.split_seed
    split = split_pool(raw.labels, raw.predefined, cfg.val_fraction, cfg.test_fraction, split_seed)
    info: dict[str, Any] = {}
    if cfg.protocol == "vtab1k":
        if cfg.shots is not None or cfg.fraction is not None or cfg.train_limit is not None:
            raise UserError("data.protocol: vtab1k fixes the training set (800 + 200 examples); leave data.shots, "
                            "data.fraction and data.train_limit out")
        split = vtab1k_split(split, raw.predefined, split_seed)
        info["data/protocol"] = cfg.protocol
    train = split.train
    if cfg.shots is not None or cfg.fraction is not None:
        seed = split_seed if cfg.subset_seed is None else cfg.subset_seed
        sub = (k_shot(train, raw.labels, cfg.shots, seed) if cfg.shots
               else fraction(train, raw.labels, cfg.fraction, seed))
        train = sub.indices
        info = {"data/shots_per_class": cfg.shots, "data/fraction": cfg.fraction,
                "data/short_classes": sub.short_classes, "data/min_class_count": min(sub.per_class.values())}
        info = {k: v for k, v in info.items() if v is not None}
    # distinct derived seeds keep the caps independent of each other but fixed by the split seed
    out = Split(balanced_take(train, raw.labels, cfg.train_limit, split_seed + 1),
                balanced_take(split.val, raw.labels, cfg.eval_limit, split_seed + 2),
                balanced_take(split.test, raw.labels, cfg.eval_limit, split_seed + 3))
    sizes = {k: len(getattr(out, k)) for k in ("train", "val", "test")}
    if min(sizes.values()) == 0:
        raise UserError(f"data: {raw.name} splits into {sizes['train']} train / {sizes['val']} val / "
                        f"{sizes['test']} test examples; every split needs some (more data, or other "
                        f"data.val_fraction / data.test_fraction)")
    return out, info


def input_collates(preprocessing: ImageSpec | TextSpec, cfg: DataConfig) -> tuple[Callable, Callable]:
    """(evaluation collate, training collate) turning raw items into backbone inputs; images get the train-time
    augmentation `cfg.augment` asks for."""
    if isinstance(preprocessing, TextSpec):
        collate = TextCollate(preprocessing)
        return collate, collate
    size = cfg.image_size or preprocessing.input_size
    shift = parse_shift(cfg.shift, "data.shift") if cfg.shift else None
    collate = ImageCollate(preprocessing, size, shift=shift)
    aug = build_augment(size, **dataclasses.asdict(cfg.augment))
    return collate, (ImageCollate(preprocessing, size, aug, shift) if aug is not None else collate)


def build_datamodule(cfg: DataConfig, preprocessing: ImageSpec | TextSpec, modality: str,
                     seed: int = 0) -> TransferDataModule:
    """Load dataset `cfg.name`, select the split and subsets, and wire the backbone's preprocessing."""
    raw = load_data(cfg, modality)
    return raw_datamodule(cfg, preprocessing, raw, *select(raw, cfg), seed)


def raw_datamodule(cfg: DataConfig, preprocessing: ImageSpec | TextSpec, raw: RawDataset, split: Split,
                   info: dict[str, Any], seed: int = 0) -> TransferDataModule:
    """The data module over raw inputs of `raw`'s `split`, with the backbone's preprocessing wired in."""
    collate, train_collate = input_collates(preprocessing, cfg)
    return TransferDataModule(raw, split, collate, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                              num_workers=cfg.num_workers, seed=seed, train_collate=train_collate, subset_info=info)
