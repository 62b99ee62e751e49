"""A LightningDataModule over a split pool, with preprocessing taken from the backbone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from tl_research.backbones.base import ImageSpec, TextSpec
from tl_research.data.datasets import RawDataset, load_dataset
from tl_research.data.splits import Split, balanced_take, stratified_split
from tl_research.errors import UserError


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
    """uint8 images (H, W[, C]) -> normalised float (B, 3, size, size); grey images are repeated to 3 channels."""

    spec: ImageSpec
    size: int

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([torch.as_tensor(img) for img, _ in items]).float().div_(255.0)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std).view(1, 3, 1, 1)
        return (x - mean) / std, torch.tensor([y for _, y in items])


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

    def __init__(self, raw: RawDataset, split: Split, collate: Callable, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.raw, self.split, self.collate, self.seed = raw, split, collate, seed
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
                          sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def build_collate(spec: ImageSpec | TextSpec, image_size: int | None) -> Callable:
    if isinstance(spec, ImageSpec):
        return ImageCollate(spec, image_size or spec.input_size)
    return TextCollate(spec)


def build_datamodule(name: str, preprocessing: ImageSpec | TextSpec, modality: str, *, root: str | None = None,
                     split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                     train_limit: int | None = None, eval_limit: int | None = None,
                     image_size: int | None = None, batch_size: int = 32, eval_batch_size: int | None = None,
                     num_workers: int = 0, seed: int = 0) -> TransferDataModule:
    """Load dataset `name`, split it with `split_seed`, cap the splits and wire the backbone's preprocessing."""
    raw = load_dataset(name, root)
    if raw.modality != modality:
        raise UserError(f"data.name: {name} holds {raw.modality} data but the backbone takes {modality}")
    split = stratified_split(raw.labels, val_fraction, test_fraction, split_seed)
    # distinct derived seeds keep the caps independent of each other but fixed by the split seed
    split = Split(balanced_take(split.train, raw.labels, train_limit, split_seed + 1),
                  balanced_take(split.val, raw.labels, eval_limit, split_seed + 2),
                  balanced_take(split.test, raw.labels, eval_limit, split_seed + 3))
    return TransferDataModule(raw, split, build_collate(preprocessing, image_size), batch_size, eval_batch_size,
                              num_workers, seed)
