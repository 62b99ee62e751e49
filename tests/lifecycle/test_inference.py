"""After the run: reload a run folder or checkpoint, predict on new inputs (image folder, CSV, npz)."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.data.registry import load_dataset, restrict_classes
from tl_research.lifecycle.inference import load_run, predict
from tl_research.pipeline import run


def _test_inputs(run_dir, raw):
    with np.load(run_dir / "predictions.npz") as z:
        return [raw.inputs[int(i)] for i in z["index"]], z["prob"]


@pytest.mark.parametrize("freeze", [{"strategy": "full"}, {"strategy": "depth", "depth": 2}])
def test_reloaded_run_gives_the_tested_predictions(tmp_path, freeze):
    exp = load_experiment(data=tiny_experiment(tmp_path, freeze=freeze, data={"classes": ["2", "3", "8"]}))
    result = run(exp, tmp_path / "r")
    assert result.metrics["cache/used"] == (freeze["strategy"] == "depth")
    # predictions.npz indexes the pool the run used: here the class subset's
    inputs, probs = _test_inputs(result.run_dir, restrict_classes(load_dataset("animal-mnist"), ["2", "3", "8"]))
    for where in (result.run_dir, result.run_dir / "checkpoints" / "best.ckpt"):
        loaded = load_run(where)
        assert loaded.classes == ["2", "3", "8"] and loaded.experiment == exp
        got, rate = predict(loaded, inputs, batch_size=7)
        assert np.allclose(got, probs, atol=1e-5) and rate > 0


def test_predict_texts_from_a_csv(tmp_path, tiny_bert, capsys):
    sections = {"backbone": {"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24},
                "data": {"name": "rotten-tomatoes", "image_size": None, "train_limit": 32, "eval_limit": 16},
                "trainer": {"max_epochs": 1}}
    result = run(load_experiment(data=tiny_experiment(tmp_path, **sections)), tmp_path / "r")
    texts = tmp_path / "new.csv"
    texts.write_text('text,other\n"a good film",1\n"dull, long and boring",2\n"the plot",3\n')
    out = tmp_path / "pred.csv"
    assert main(["predict", str(result.run_dir), str(texts), "--out", str(out)]) == 0
    assert "3 inputs" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    classes = load_run(result.run_dir).classes
    # no id column: each row is named by its text
    assert [r["input"] for r in rows] == ["a good film", "dull, long and boring", "the plot"]
    assert set(rows[0]) == {"input", "predicted", *(f"p_{c}" for c in classes)}
    for r in rows:
        p = [float(r[f"p_{c}"]) for c in classes]
        assert sum(p) == pytest.approx(1, abs=1e-4) and r["predicted"] == classes[int(np.argmax(p))]
    # an `id` column names the rows; --id-column names another; a missing one is one line
    texts.write_text('id,text,other\nr7,"a good film",x\nr9,"the plot",y\n')
    assert main(["predict", str(result.run_dir), str(texts), "--out", str(out)]) == 0
    assert [r["input"] for r in csv.DictReader(out.open())] == ["r7", "r9"]
    assert main(["predict", str(result.run_dir), str(texts), "--out", str(out), "--id-column", "other"]) == 0
    assert [r["input"] for r in csv.DictReader(out.open())] == ["x", "y"]
    capsys.readouterr()
    assert main(["predict", str(result.run_dir), str(texts), "--out", str(out), "--id-column", "nope"]) == 2
    err = capsys.readouterr().err
    assert "tlr: error: --id-column: " in err and "has no column 'nope'" in err


def test_predict_an_image_folder_and_an_npz(tmp_path, capsys):
    result = run(load_experiment(data=tiny_experiment(tmp_path)), tmp_path / "r")
    raw = load_dataset("animal-mnist")
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(raw.inputs[i]).save(folder / f"{i}.png")
    out = tmp_path / "p.csv"
    assert main(["predict", str(result.run_dir), str(tmp_path / "imgs"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["input"] for r in rows] == [f"sub/{i}.png" for i in range(5)]
    np.savez(tmp_path / "x.npz", x=raw.inputs[:5])
    assert main(["predict", str(result.run_dir), str(tmp_path / "x.npz"), "--out", str(tmp_path / "n.csv")]) == 0
    from_npz = list(csv.DictReader((tmp_path / "n.csv").open()))
    assert [r["predicted"] for r in from_npz] == [r["predicted"] for r in rows]  # same images, same answers


def test_predict_bad_input(tmp_path, capsys):
    result = run(load_experiment(data=tiny_experiment(tmp_path)), tmp_path / "r")
    texts = tmp_path / "t.csv"
    texts.write_text("text\nhello\n")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    cases = [([str(tmp_path / "nosuch"), str(texts)], "run: "),
             ([str(result.run_dir), str(texts)], "holds text inputs but the run's model takes image"),
             ([str(result.run_dir), str(tmp_path / "r" / "config.yaml")], "is not an image folder"),
             ([str(result.run_dir), str(tmp_path / "missing")], "input: "),
             ([str(foreign), str(texts)], "carries no tl_research config")]
    for args, message in cases:
        assert main(["predict", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_offline_mobilenet_probe_reloads(tmp_path):
    """Real path: the converged probe on cached MobileNetV2 features reloads into a full-network model."""
    exp = load_experiment("experiments/mobilenetv2_animal_linear_probe.yaml", [
        "data.train_limit=100", "data.eval_limit=50", "data.image_size=64", "tracking.mode=disabled"])
    result = run(exp, tmp_path / "r")
    inputs, probs = _test_inputs(result.run_dir, load_dataset("animal-mnist"))
    got, _ = predict(load_run(result.run_dir), inputs)
    assert np.allclose(got, probs, atol=1e-4)
