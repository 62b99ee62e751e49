"""`data.name: torchvision`: a torchvision dataset class read offline from its own layout — tested on the real
Fashion-MNIST files (Debian's package, laid out as torchvision expects), which must give exactly the built-in
loader's pool; bad names and folders are one line."""

import gzip
import shutil

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.data.registry import LoadOptions, load_dataset


@pytest.fixture
def torchvision_root(tmp_path, fashion_mnist_folder):
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in fashion_mnist_folder.glob("*-ubyte.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:  # torchvision reads the unpacked files
            shutil.copyfileobj(src, dst)
    return tmp_path / "tv"


def test_a_torchvision_dataset_is_the_same_pool_as_the_built_in_loader(torchvision_root):
    mine = load_dataset("torchvision", str(torchvision_root), LoadOptions(path="FashionMNIST"))
    built_in = load_dataset("fashion-mnist")
    assert mine.inputs.shape == (70_000, 28, 28) and mine.inputs.dtype == np.uint8
    assert np.array_equal(mine.inputs, built_in.inputs) and np.array_equal(mine.labels, built_in.labels)
    assert mine.classes == built_in.classes  # torchvision's class names, in its label order
    assert np.array_equal(mine.predefined, built_in.predefined)  # its own train / test split is kept


def test_fit_on_a_torchvision_dataset(tmp_path, torchvision_root, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={
        "name": "torchvision", "path": "FashionMNIST", "root": str(torchvision_root), "train_limit": 40,
        "eval_limit": 30, "image_size": 32})))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run")]) == 0
    metrics = yaml.safe_load((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "torchvision" and metrics["data/num_classes"] == 10
    split = yaml.safe_load((tmp_path / "run" / "split.json").read_text())
    assert min(split["test"]) >= 60_000  # tested on torchvision's test split only


@pytest.mark.parametrize("data, message", [
    ({"root": "ROOT"}, "data.path: name a torchvision dataset class"),
    ({"root": "ROOT", "path": "NoSuchSet"}, "data.path: 'NoSuchSet' is not a torchvision dataset"),
    ({"path": "FashionMNIST"}, "data.root: the folder torchvision keeps the dataset in"),
    ({"root": "EMPTY", "path": "FashionMNIST"}, "data.root: no FashionMNIST under"),
    ({"root": "ROOT", "path": "CIFAR10"}, "data.root: no CIFAR10 under"),
])
def test_bad_torchvision_input_is_one_line(tmp_path, torchvision_root, capsys, data, message):
    (tmp_path / "empty").mkdir()
    where = {"ROOT": str(torchvision_root), "EMPTY": str(tmp_path / "empty")}
    data = {k: where.get(v, v) for k, v in data.items()}
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={"name": "torchvision", **data})))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_data_path_is_refused_where_it_takes_no_effect(tmp_path, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={"path": "FashionMNIST"})))
    assert main(["config", str(cfg)]) == 2
    assert "data.path" in capsys.readouterr().err
