"""`data.name: hf`: Hugging Face datasets from a save_to_disk folder and from parquet files, built here from the real
Animal-MNIST and Rotten Tomatoes pools, must give exactly those pools (images, texts, labels, class names) with the
dataset's own splits; `tlr fit` trains on both; the feature cache is keyed by the dataset's fingerprint; the
VTAB-1k protocol draws 800 + 200 from the training split; bad input is one line."""

import json

import datasets  # make install installs it (the hf extra)
import numpy as np
import pytest
import yaml

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.data.datamodule import select
from tl_research.data.options import DataConfig
from tl_research.data.registry import LoadOptions, load_dataset
from tl_research.pipeline import run

TRAIN, TEST = 1200, 300  # Animal-MNIST examples written as the hf dataset's train and test splits


def _image_dataset(pool, rows: np.ndarray, images: list | None = None) -> "datasets.Dataset":
    features = datasets.Features({"id": datasets.Value("int64"), "picture": datasets.Image(),
                                  "animal": datasets.ClassLabel(names=pool.classes)})
    images = [pool.inputs[i] for i in rows] if images is None else images
    return datasets.Dataset.from_dict({"id": rows.tolist(), "picture": images,
                                       "animal": pool.labels[rows].tolist()}, features=features)


@pytest.fixture(scope="module")
def animal_pool():
    return load_dataset("animal-mnist")


@pytest.fixture(scope="module")
def hf_images(tmp_path_factory, animal_pool):
    """A save_to_disk DatasetDict (train, test) of real Animal-MNIST images: an Image, a ClassLabel and an int
    column."""
    folder = tmp_path_factory.mktemp("hf") / "animals"
    rows = np.random.default_rng(0).permutation(len(animal_pool))[:TRAIN + TEST]
    datasets.DatasetDict(train=_image_dataset(animal_pool, rows[:TRAIN]),
                         test=_image_dataset(animal_pool, rows[TRAIN:])).save_to_disk(str(folder))
    return folder, rows


@pytest.fixture(scope="module")
def hf_texts(tmp_path_factory):
    """Parquet files (train, test) of real Rotten Tomatoes reviews with string labels and an extra string column:
    the text column must be named, the labels become sorted class names."""
    pool = load_dataset("rotten-tomatoes")
    folder = tmp_path_factory.mktemp("hf-text")
    for split, rows in (("train", range(0, 300)), ("test", range(6000, 6200))):
        datasets.Dataset.from_dict({
            "review": [pool.inputs[i] for i in rows], "critic": ["anonymous"] * len(rows),
            "verdict": [pool.classes[pool.labels[i]] for i in rows]}).to_parquet(str(folder / f"{split}.parquet"))
    return folder, pool


def test_a_save_to_disk_folder_is_the_same_pool_with_its_splits(hf_images, animal_pool):
    folder, rows = hf_images
    mine = load_dataset("hf", None, LoadOptions(path=str(folder)))
    assert mine.modality == "image" and mine.classes == animal_pool.classes  # from the ClassLabel feature
    assert np.array_equal(mine.labels, animal_pool.labels[rows])
    assert np.array_equal(mine.predefined, np.repeat([0, 2], [TRAIN, TEST]))  # the dataset's own splits
    for i in (0, TRAIN - 1, TRAIN, TRAIN + TEST - 1):  # grey images come back as RGB, pixel for pixel
        assert np.array_equal(mine.inputs[i], np.repeat(animal_pool.inputs[rows[i]][..., None], 3, axis=-1))


def test_an_image_folder_and_its_hf_copy_split_alike(tmp_path, animal_pool):
    """The same images as an image folder (`root/<class>/*.png`) and as the HF `imagefolder` copy of it saved to
    disk (one `train` split): the same pool in the same order, and so the same train/val/test examples."""
    from PIL import Image

    folder = tmp_path / "animals"
    for c in range(10):
        (folder / animal_pool.classes[c]).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(animal_pool.labels == c)[:40]):
            Image.fromarray(animal_pool.inputs[i]).save(folder / animal_pool.classes[c] / f"{j:03d}.png")
    datasets.load_dataset("imagefolder", data_dir=str(folder)).save_to_disk(str(tmp_path / "copy"))
    pools = [load_dataset("image_folder", str(folder)),
             load_dataset("hf", None, LoadOptions(path=str(tmp_path / "copy")))]
    assert pools[1].classes == pools[0].classes and np.array_equal(pools[1].labels, pools[0].labels)
    assert all(np.array_equal(pools[1].inputs[i][..., 0], np.asarray(pools[0].inputs[i])[..., 0]) for i in (0, 399))
    splits = [select(pool, DataConfig(name="x"))[0] for pool in pools]
    assert [len(splits[0].train), len(splits[0].val), len(splits[0].test)] == [280, 40, 80]  # 70/10/20 of 400
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(splits[1], part), getattr(splits[0], part)), part


def test_parquet_texts_with_a_named_column(hf_texts):
    folder, pool = hf_texts
    files = {"train": [str(folder / "train.parquet")], "test": [str(folder / "test.parquet")]}
    mine = load_dataset("hf", None, LoadOptions(path="parquet", data_files=tuple((k, tuple(v)) for k, v in
                                                                                 files.items()),
                                                text_column="review", label_column="verdict"))
    assert mine.modality == "text" and mine.classes == sorted(pool.classes)
    assert mine.inputs == [pool.inputs[i] for i in [*range(300), *range(6000, 6200)]]
    assert [mine.classes[y] for y in mine.labels] == [pool.classes[pool.labels[i]]
                                                     for i in [*range(300), *range(6000, 6200)]]


def test_text_and_class_columns_are_detected(tmp_path, hf_texts):
    """One string column and one ClassLabel: both found without naming them, class names from the ClassLabel."""
    _, pool = hf_texts
    features = datasets.Features({"review": datasets.Value("string"),
                                  "verdict": datasets.ClassLabel(names=["rotten", "fresh"])})
    datasets.Dataset.from_dict({"review": pool.inputs[:50], "verdict": [i % 2 for i in range(50)]},
                               features=features).to_parquet(str(tmp_path / "t.parquet"))
    mine = load_dataset("hf", None, LoadOptions(path="parquet", data_files=(str(tmp_path / "t.parquet"),)))
    assert mine.modality == "text" and mine.classes == ["rotten", "fresh"] and mine.inputs == pool.inputs[:50]
    assert mine.labels.tolist() == [i % 2 for i in range(50)]


def test_fit_on_an_image_and_a_text_dataset(tmp_path, hf_images, hf_texts, tiny_bert):
    folder, _ = hf_images
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    assert main(["fit", str(cfg), "--set", "data.name=hf", "--set", f"data.path={folder}",
                 "--out", str(tmp_path / "img")]) == 0
    metrics = json.loads((tmp_path / "img" / "metrics.json").read_text())
    assert metrics["dataset"] == "hf" and metrics["data/num_classes"] == 10
    assert min(json.loads((tmp_path / "img" / "split.json").read_text())["test"]) >= TRAIN  # the test split only
    texts, _ = hf_texts
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, backbone={"name": f"hf/{tiny_bert}", "weights": "offline",
                                                                      "max_length": 24})))
    sets = ["data.name=hf", "data.path=parquet", "data.image_size=null", f"data.data_files={texts}/train.parquet",
            "data.text_column=review", "data.label_column=verdict"]
    assert main(["fit", str(cfg), *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / "txt")]) == 0
    metrics = json.loads((tmp_path / "txt" / "metrics.json").read_text())
    assert metrics["data/num_classes"] == 2 and metrics["data/test_size"] == 40


def test_the_feature_cache_is_keyed_by_the_dataset_fingerprint(tmp_path, hf_images, animal_pool):
    folder, rows = hf_images
    depth = {"freeze": {"strategy": "depth", "depth": 2}, "data": {"name": "hf", "path": str(folder)}}
    first = run(load_experiment(data=tiny_experiment(tmp_path, name="a", **depth))).metrics
    again = run(load_experiment(data=tiny_experiment(tmp_path, name="b", **depth))).metrics
    assert first["cache/used"] and again["cache/key"] == first["cache/key"] and again["cache/rows_computed"] == 0
    uncached = run(load_experiment(data=tiny_experiment(tmp_path, name="c", **depth, cache={"mode": "off"}))).metrics
    assert uncached["test/acc"] == pytest.approx(first["test/acc"], abs=1e-4)
    other = tmp_path / "other"  # same labels and layout, one image changed: another fingerprint, another key
    images = [animal_pool.inputs[i] for i in rows[:TRAIN]]
    images[5] = 255 - images[5]
    changed = _image_dataset(animal_pool, rows[:TRAIN], images)
    datasets.DatasetDict(train=changed, test=_image_dataset(animal_pool, rows[TRAIN:])).save_to_disk(str(other))
    moved = run(load_experiment(data=tiny_experiment(tmp_path, name="d", **{**depth, "data": {
        "name": "hf", "path": str(other)}}))).metrics
    assert moved["cache/key"] != first["cache/key"]


def test_vtab1k_draws_800_and_200_from_the_training_split(hf_images):
    folder, _ = hf_images
    raw = load_dataset("hf", None, LoadOptions(path=str(folder)))
    split, info = select(raw, DataConfig(name="hf", path=str(folder), protocol="vtab1k"))
    assert (len(split.train), len(split.val), len(split.test)) == (800, 200, TEST)
    assert set(split.train).isdisjoint(split.val) and max(split.val) < TRAIN and max(split.train) < TRAIN
    assert info["data/protocol"] == "vtab1k"
    again, _ = select(raw, DataConfig(name="hf", path=str(folder), protocol="vtab1k"))
    other, _ = select(raw, DataConfig(name="hf", path=str(folder), protocol="vtab1k", split_seed=1))
    assert np.array_equal(again.train, split.train) and not np.array_equal(other.train, split.train)


@pytest.mark.parametrize("sets, message", [
    ([], "data.path: a hub id, a save_to_disk folder"),
    (["data.path={tmp}/missing"], "data.path: cannot load"),
    (["data.path=parquet", "data.data_files={texts}/train.parquet", "data.text_column=review",
      "data.label_column=review"], "data.label_column: 'review' is the input column"),
    (["data.path={images}", "data.label_column=colour"], "data.label_column: the dataset has no column 'colour' "
                                                         "(columns: id (Value), picture (Image), animal (ClassLabel))"),
    (["data.path={images}", "data.label_column=id", "data.image_column=animal"], "data.image_column: column 'animal' "
                                                                                 "holds ClassLabel, not images"),
    (["data.path={images}", "data.splits={{train: train, test: holdout}}"], "data.splits.test: the dataset has no "
                                                                           "split 'holdout' (splits: train, test)"),
    (["data.path={images}", "data.root={tmp}"], "data.root: data.name hf reads data.path"),
    (["data.path=parquet", "data.data_files={texts}/train.parquet"], "data.image_column: say which column holds the "
                                                                     "inputs"),
    (["data.path={images}", "data.protocol=vtab1k", "data.shots=2"], "data.protocol: vtab1k fixes the training set"),
    (["data.path={images}", "data.subset=x"], "data.subset: a save_to_disk folder holds one dataset"),
])
def test_bad_hf_input_is_one_line(tmp_path, hf_images, hf_texts, capsys, sets, message):
    where = {"images": str(hf_images[0]), "texts": str(hf_texts[0]), "tmp": str(tmp_path)}
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    args = [a for s in ["data.name=hf", *sets] for a in ("--set", s.format(**where))]
    assert main(["fit", str(cfg), *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_hub_id_offline_is_one_line(tmp_path, capsys):
    """conftest keeps every test offline (HF_HUB_OFFLINE=1), as a machine without a network is."""
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    assert main(["fit", str(cfg), "--set", "data.name=hf", "--set", "data.path=cifar100"]) == 2
    err = capsys.readouterr().err
    assert "data.path: 'cifar100' is neither a local dataset nor reachable on the Hugging Face Hub" in err, err
    assert err.count("\n") == 1


@pytest.fixture(scope="module")
def hf_parquet_images(tmp_path_factory, animal_pool):
    """Parquet files (train, test) of real Animal-MNIST images with their Image and ClassLabel features."""
    folder = tmp_path_factory.mktemp("hf-parquet")
    rows = np.random.default_rng(1).permutation(len(animal_pool))[:300]
    _image_dataset(animal_pool, rows[:200]).to_parquet(str(folder / "train.parquet"))
    _image_dataset(animal_pool, rows[200:]).to_parquet(str(folder / "test.parquet"))
    return folder


def test_a_streamed_dataset_gives_the_same_probe_as_the_loaded_one(tmp_path, hf_parquet_images):
    """The frozen-feature path reads a stream once, in order: the converged probe on streamed parquet files equals
    the one on the same files loaded memory-mapped."""
    files = {"train": [str(hf_parquet_images / "train.parquet")], "test": [str(hf_parquet_images / "test.parquet")]}
    data = {"name": "hf", "path": "parquet", "data_files": files, "train_limit": None, "eval_limit": None}
    probe = {"freeze": {"strategy": "linear_probe"}}
    loaded = run(load_experiment(data=tiny_experiment(tmp_path, name="loaded", data=data, **probe))).metrics
    streamed = run(load_experiment(data=tiny_experiment(tmp_path, name="streamed", data={**data, "streaming": True},
                                                        **probe))).metrics
    assert streamed["cache/used"] and streamed["cache/key"] != loaded["cache/key"]  # its own rows, computed
    assert streamed["data/test_size"] == loaded["data/test_size"] == 100
    for key in ("test/acc", "val/acc", "probe/l2"):
        assert streamed[key] == pytest.approx(loaded[key], abs=1e-6), key
    pool = load_dataset("hf", None, LoadOptions(path="parquet", data_files=tuple((k, tuple(v)) for k, v in
                                                                                 files.items()), streaming=True))
    assert pool.inputs.restarts == 0  # every row was read in one forward pass


@pytest.mark.parametrize("sets, message", [
    (["data.path=parquet", "data.data_files={parquet}/train.parquet", "data.streaming=true"],
     "data.streaming: a stream is read once, in order"),
    (["data.path={images}", "data.streaming=true"], "data.streaming: a save_to_disk folder is read memory-mapped"),
])
def test_streaming_where_it_cannot_work_is_one_line(tmp_path, hf_images, hf_parquet_images, capsys, sets, message):
    where = {"images": str(hf_images[0]), "parquet": str(hf_parquet_images)}
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))  # full fine-tuning: every image every epoch
    args = [a for s in ["data.name=hf", *sets] for a in ("--set", s.format(**where))]
    assert main(["fit", str(cfg), *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
