"""The data section's options (`data:` of an experiment, declared here next to the loaders and the data module that
read them): which dataset, its split, few-shot subsets, shifts, augmentation and batching."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from tl_research.schema import SEED, applies_when, bounds, keyed, parse_fields, unkeyed


@dataclass
class AugmentConfig:
    """Train-time image augmentation (evaluation is never augmented); everything off by default."""

    random_resized_crop: bool = False  # a random crop of the image, resized to the input size
    crop_scale: float = field(default=0.5, metadata=bounds(gt=0.0, le=1.0))  # smallest crop area share
    hflip: bool = False  # random horizontal flips
    rotation: float = field(default=0.0, metadata=bounds(ge=0.0, le=180.0))  # random rotation up to this, in degrees
    shear: float = field(default=0.0, metadata=bounds(ge=0.0, le=45.0))  # random shear up to this, in degrees
    zoom: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))  # scale in [1 - zoom, 1 + zoom]
    translate: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))  # shift by up to this share of the side


@dataclass
class DataConfig:
    # a registered dataset (tlr datasets)
    name: str = field(default="animal-mnist", metadata=keyed())
    # folder or file for datasets that read from disk (None: the dataset's default location)
    root: str | None = field(default=None, metadata=unkeyed())
    # seeds the train/val/test split (and, unless subset_seed is set, the k-shot subsets); independent of the
    # training seed
    split_seed: int = field(default=0, metadata=unkeyed(SEED))
    # seeds the k-shot / fraction draw from the training split (None: split_seed); a few-shot study varies it with
    # the seed (study.seed_keys) to average over support sets on one fixed split
    subset_seed: int | None = field(default=None, metadata=unkeyed(SEED))
    # split shares per class (validation, test)
    val_fraction: float = field(default=0.1, metadata=unkeyed(bounds(gt=0.0, lt=1.0)))
    test_fraction: float = field(default=0.2, metadata=unkeyed(bounds(gt=0.0, lt=1.0)))
    # a benchmark protocol: vtab1k = 800 train + 200 validation examples drawn at random (split_seed) from the
    # training split, tested on the whole test split (VTAB-1k, Zhai et al. 2019)
    protocol: Literal["vtab1k"] | None = field(default=None, metadata=unkeyed())
    # k examples per class from the training split (nested across k), or a stratified share of it
    shots: int | None = field(default=None, metadata=unkeyed(bounds(ge=1)))
    fraction: float | None = field(default=None, metadata=unkeyed(bounds(gt=0.0, le=1.0)))
    # train and evaluate on these classes only (names as `tlr datasets` data shows them; None: every class)
    classes: list[str] | None = field(default=None, metadata=unkeyed())
    # shifted copies of the test split evaluated after the test, each logged as test_<name>_<severity>/acc:
    # "<name>[:<severity 1-5>]" with name gaussian_noise | blur | contrast | rotation | brightness (images only)
    eval_shifts: list[str] | None = field(default=None, metadata=unkeyed())
    # one corruption ("<name>[:<severity>]", as above) applied to every split: train, val and test come from the
    # shifted domain (adapting a model to a distribution shift, as in surgical fine-tuning; images only)
    shift: str | None = field(default=None, metadata=keyed())
    # stratified caps on split sizes (None: everything the split holds)
    train_limit: int | None = field(default=None, metadata=unkeyed(bounds(ge=1)))
    eval_limit: int | None = field(default=None, metadata=unkeyed(bounds(ge=1)))
    # csv_text: column names (None: "text" and "label"; a .tsv file is read tab-separated); hf: column names (None:
    # detected from the features: the one Image / string column, the one ClassLabel column)
    text_column: str | None = field(default=None, metadata=unkeyed(applies_when("name", ("csv_text", "hf"))))
    label_column: str | None = field(default=None, metadata=unkeyed(applies_when("name", ("csv_text", "hf"))))
    image_column: str | None = field(default=None, metadata=unkeyed(applies_when("name", ("hf",))))
    # npz: array names
    x_key: str = field(default="x", metadata=unkeyed(applies_when("name", ("npz",))))
    y_key: str = field(default="y", metadata=unkeyed(applies_when("name", ("npz",))))
    # torchvision: the dataset class of torchvision.datasets (e.g. FashionMNIST, CIFAR10, Flowers102), read from
    # data.root as torchvision lays it out (never downloaded); hf: a hub id, a save_to_disk folder, or a loader
    # (parquet, csv, json, imagefolder) reading data.data_files
    path: str | None = field(default=None, metadata=unkeyed(applies_when("name", ("torchvision", "hf"))))
    # hf: the hub config name (e.g. "sst2" of glue)
    subset: str | None = field(default=None, metadata=unkeyed(applies_when("name", ("hf",))))
    # hf: the loader's files: a list, or a mapping {split: files}
    data_files: list[str] | dict[str, list[str]] | None = field(
        default=None, metadata=unkeyed(applies_when("name", ("hf",))))
    # hf: which of the dataset's splits is {train, val, test} (None: train, validation/valid/val/dev, test; a
    # missing val or test split is carved out of train)
    splits: dict[str, str] | None = field(default=None, metadata=unkeyed(applies_when("name", ("hf",))))
    # hf: read a hub id or data files as a stream, never held whole; only runs that train on cached features of a
    # frozen backbone (a linear probe, depth k) read it, in one pass
    streaming: bool = field(default=False, metadata=unkeyed(applies_when("name", ("hf",))))
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata=unkeyed())  # train-time augmentation
    # image side in pixels (None: the backbone's pretrained input size)
    image_size: int | None = field(default=None, metadata=keyed(bounds(ge=8, le=1024)))
    batch_size: int = field(default=32, metadata=unkeyed(bounds(ge=1)))  # the training batch size
    # validation / test batch size (None: batch_size)
    eval_batch_size: int | None = field(default=None, metadata=unkeyed(bounds(ge=1)))
    num_workers: int = field(default=0, metadata=unkeyed(bounds(ge=0)))  # DataLoader worker processes
    # a plugin dataset's own options (its loader's other keyword arguments), written as data.<option>; the cache
    # keys rows by their content, so they need not be in its key
    options: dict[str, Any] = field(default_factory=dict, metadata=unkeyed({"flat": True}))

    def __post_init__(self) -> None:
        if self.options:  # (the registry, and numpy, load only for a config that sets a loader's own options)
            from tl_research.data.registry import loader_owners

            loader_owners().check(self.name, self.options)

    @classmethod
    def from_mapping(cls, data: Any, prefix: str = "data.") -> DataConfig:
        if not isinstance(data, dict) or all(k in _FIXED for k in data):
            return cls(**parse_fields(cls, data, prefix, skip=("options",)))
        from tl_research.data.registry import loader_owners

        fixed = parse_fields(cls, {k: v for k, v in data.items() if k in _FIXED}, prefix, skip=("options",))
        own = {k: v for k, v in data.items() if k not in _FIXED}
        return cls(**fixed, options=loader_owners().parse(fixed.get("name", cls.name), own, list(_FIXED)))

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "options"}, **self.options}


_FIXED = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name != "options")
