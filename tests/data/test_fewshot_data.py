"""k-shot subsets, the real extra datasets, users' own data (image folders, CSV, npz) and augmentation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import tiny_experiment
from tl_research.backbones.base import ImageSpec
from tl_research.cli.main import main
from tl_research.config import AugmentConfig, DataConfig
from tl_research.data import load_dataset
from tl_research.data.datamodule import build_augment, build_datamodule
from tl_research.data.fewshot import fraction, k_shot
from tl_research.data.splits import stratified_split
from tl_research.errors import UserError

SPEC = ImageSpec(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def animals():
    data = load_dataset("animal-mnist")
    return data, stratified_split(data.labels, 0.1, 0.2, seed=0)


def test_k_shot_exact_counts_and_nesting(animals):
    data, split = animals
    sets = {k: k_shot(split.train, data.labels, k, seed=0) for k in (1, 2, 4, 8, 64)}
    for k, sub in sets.items():
        assert np.bincount(data.labels[sub.indices], minlength=10).tolist() == [k] * 10
        assert sub.short_classes == 0 and set(sub.indices) <= set(split.train)
    for small, big in zip((1, 2, 4, 8), (2, 4, 8, 64)):
        assert set(sets[small].indices) <= set(sets[big].indices)
    assert not np.array_equal(k_shot(split.train, data.labels, 8, seed=1).indices, sets[8].indices)


def test_short_classes_are_taken_whole_and_reported():
    labels = np.array([0] * 10 + [1] * 3)
    sub = k_shot(np.arange(13), labels, 5, seed=0)
    assert sub.per_class == {0: 5, 1: 3} and sub.short_classes == 1
    with pytest.raises(UserError, match="data.shots: 11 is more than any class has"):
        k_shot(np.arange(13), labels, 11, seed=0)
    half = fraction(np.arange(13), labels, 0.5, seed=0)
    assert half.per_class == {0: 5, 1: 2}
    assert set(fraction(np.arange(13), labels, 0.2, seed=0).indices) <= set(half.indices)


def test_same_split_seed_same_indices_in_separate_processes():
    code = ("import numpy as np, torch; torch.manual_seed({t}); np.random.seed({t});"
            "from tl_research.data import load_dataset;"
            "from tl_research.data.splits import stratified_split;"
            "from tl_research.data.fewshot import k_shot;"
            "d = load_dataset('animal-mnist'); s = stratified_split(d.labels, 0.1, 0.2, {s});"
            "print(k_shot(s.train, d.labels, 4, {s}).indices.tolist(), s.test[:20].tolist())")
    out = [subprocess.run([sys.executable, "-c", code.format(t=t, s=s)], capture_output=True, text=True,
                          check=True).stdout for t, s in ((1, 3), (2, 3), (1, 4))]
    assert out[0] == out[1]  # the training seed does not matter
    assert out[0] != out[2]


def test_few_shot_datamodule_splits_are_disjoint(animals):
    dm = build_datamodule(DataConfig(name="animal-mnist", shots=4, split_seed=0, image_size=32), SPEC, "image")
    train, val, test = (set(dm.split.train), set(dm.split.val), set(dm.split.test))
    assert len(train) == 40 and not (train & val or train & test or val & test)
    assert dm.subset_info["data/shots_per_class"] == 4 and dm.subset_info["data/min_class_count"] == 4


def test_fashion_mnist_real_debian_files(fashion_mnist_folder):
    data = load_dataset("fashion-mnist")
    assert data.inputs.shape == (70_000, 28, 28) and data.classes[0] == "T-shirt/top"
    assert np.bincount(data.labels).tolist() == [7000] * 10
    dm = build_datamodule(DataConfig(name="fashion-mnist", shots=2, eval_limit=50, image_size=32), SPEC, "image")
    assert set(dm.split.test) <= set(range(60_000, 70_000))  # the predefined test set is kept
    assert not set(dm.split.val) & set(range(60_000, 70_000))


def test_digits_real():
    data = load_dataset("digits")
    assert data.inputs.shape == (1797, 8, 8) and data.inputs.dtype == np.uint8 and data.inputs.max() == 255


def _image_tree(root, classes=("cat", "dog"), per_class=6, size=(20, 16)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_tree_and_predefined_splits(tmp_path):
    data = load_dataset("image_folder", str(_image_tree(tmp_path / "flat")))
    assert data.classes == ["cat", "dog"] and len(data) == 12 and data.predefined is None
    img = data.inputs[0]
    assert img.shape == (20, 16, 3) and img.dtype == np.uint8
    _image_tree(tmp_path / "split" / "train", per_class=5)
    _image_tree(tmp_path / "split" / "test", per_class=2)
    data = load_dataset("image_folder", str(tmp_path / "split"))
    assert np.bincount(data.predefined).tolist() == [10, 0, 4]
    dm = build_datamodule(DataConfig(name="image_folder", root=str(tmp_path / "split"), val_fraction=0.2,
                                     image_size=24, batch_size=4), SPEC, "image")
    assert len(dm.split.test) == 4 and len(dm.split.val) == 2
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 24, 24)


def test_csv_and_npz_files(tmp_path):
    csv_path = tmp_path / "reviews.tsv"
    csv_path.write_text("review\tsentiment\n" + "".join(f"text {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(20)))
    data = load_dataset("csv_text", str(csv_path), _opts(text_column="review", label_column="sentiment"))
    assert data.classes == ["neg", "pos"] and data.inputs[1] == "text 1" and data.labels[1] == 1
    npz = tmp_path / "arrays.npz"
    np.savez(npz, x=np.random.rand(30, 12, 12).astype(np.float32), y=np.arange(30) % 3)
    data = load_dataset("npz", str(npz))
    assert data.inputs.dtype == np.uint8 and data.classes == ["0", "1", "2"]


def _opts(**kw):
    from tl_research.data.datasets import LoadOptions

    return LoadOptions(**kw)


@pytest.mark.parametrize("make, overrides, message", [
    (lambda p: None, ["data.name=image_folder", "data.root={p}/nowhere"], "does not exist"),
    (lambda p: (p / "imgs" / "cat").mkdir(parents=True), ["data.name=image_folder", "data.root={p}/imgs"],
     "class folder"),
    (lambda p: (p / "t.csv").write_text("body,label\nhi,a\n"), ["data.name=csv_text", "data.root={p}/t.csv"],
     "data.text_column: "),
    (lambda p: (p / "one.csv").write_text("text,label\nhi,a\nho,a\n"), ["data.name=csv_text", "data.root={p}/one.csv"],
     "single class"),
    (lambda p: None, ["data.shots=10000"], "data.shots: 10000 is more than any class has"),
    (lambda p: (p / "bad" / "cat").mkdir(parents=True) or (p / "bad" / "cat" / "x.png").write_text("no png"),
     ["data.name=image_folder", "data.root={p}/bad"], "x.png: unreadable image"),
])
def test_bad_data_input_exits_2(tmp_path, capsys, make, overrides, message):
    make(tmp_path)
    cfg = tmp_path / "x.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    args = [a for o in overrides for a in ("--set", o.format(p=tmp_path))]
    if any("csv" in o for o in overrides):
        args += ["--set", "backbone.name=hf/all-MiniLM-L6-v2", "--set", "backbone.weights=offline"]
    assert main(["fit", str(cfg), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_user_folder_and_csv_train_through_tlr_fit(tmp_path, tiny_bert):
    _image_tree(tmp_path / "pets", per_class=10)
    (tmp_path / "pets.yaml").write_text(yaml.safe_dump({
        "backbone": {"name": "timm/test_efficientnet", "weights": "none"},
        "data": {"name": "image_folder", "root": str(tmp_path / "pets"), "image_size": 32},
        "trainer": {"max_epochs": 1}, "tracking": {"mode": "disabled"}}))
    assert main(["fit", str(tmp_path / "pets.yaml"), "--out", str(tmp_path / "r1")]) == 0
    m = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert m["data/num_classes"] == 2 and m["data/train_size"] + m["data/val_size"] + m["data/test_size"] == 20
    (tmp_path / "texts.csv").write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n"
                                                                for i in range(15)))
    (tmp_path / "texts.yaml").write_text(yaml.safe_dump({
        "backbone": {"name": f"hf/{tiny_bert}", "weights": "offline"},
        "data": {"name": "csv_text", "root": str(tmp_path / "texts.csv")},
        "trainer": {"max_epochs": 1}, "tracking": {"mode": "disabled"}}))
    assert main(["fit", str(tmp_path / "texts.yaml"), "--out", str(tmp_path / "r2")]) == 0
    split = json.loads((tmp_path / "r2" / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 30


def test_shots_through_tlr_fit_report_and_split_file(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "r"), "--set", "data.shots=4",
                 "--set", "data.train_limit=null"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["data/shots_per_class"] == 4 and m["data/train_size"] == 40
    split = json.loads((tmp_path / "r" / "split.json").read_text())
    data = load_dataset("animal-mnist")
    assert np.bincount(data.labels[split["train"]]).tolist() == [4] * 10


def test_augmentation_only_in_training():
    dm = build_datamodule(DataConfig(name="animal-mnist", train_limit=8, eval_limit=8, image_size=32, batch_size=8,
                                     augment=AugmentConfig(random_resized_crop=True, crop_scale=0.3, hflip=True,
                                                           rotation=15)), SPEC, "image")
    img = dm.sets["train"][0][0]
    torch.manual_seed(0)
    a = dm.train_collate([(img, 0)])[0]
    b = dm.train_collate([(img, 0)])[0]
    assert a.shape == (1, 3, 32, 32) and not torch.equal(a, b)
    assert torch.equal(dm.collate([(img, 0)])[0], dm.collate([(img, 0)])[0])
    assert dm.val_dataloader().collate_fn is dm.collate and dm.test_dataloader().collate_fn is dm.collate
    assert build_augment(32) is None  # off by default


def test_translate_shifts_the_image():
    aug = build_augment(16, translate=0.25)
    img = torch.zeros(3, 16, 16)
    img[:, 6:10, 6:10] = 1.0
    torch.manual_seed(0)
    moved = [aug(img) for _ in range(8)]
    centres = {tuple(torch.nonzero(m[0] > 0.5).float().mean(0).round().tolist()) for m in moved}
    assert len(centres) > 1  # shifted by different amounts
    assert all(abs(c[0] - 7.5) <= 4.5 and abs(c[1] - 7.5) <= 4.5 for c in centres)  # by at most 25% of the side
