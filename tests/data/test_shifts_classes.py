"""Class subsets (`data.classes`), shifted test sets (`data.eval_shifts`) and a shifted domain (`data.shift`)."""

import json

import numpy as np
import optuna
import pytest
import torch
import yaml

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.data.registry import load_dataset, restrict_classes
from tl_research.data.shifts import MEAN_METRIC, SHIFTS, parse_shifts
from tl_research.pipeline import run
from tl_research.reports.predictions import correct_matrix, from_run_folder
from tl_research.schema import features_options


def _fit(tmp_path, name, **sections):
    return run(load_experiment(data=tiny_experiment(tmp_path, **sections)), tmp_path / name)


def test_class_subset_keeps_exactly_those_examples_relabelled():
    raw = load_dataset("animal-mnist")
    sub = restrict_classes(raw, ["7", "2", "5"])
    assert sub.classes == ["2", "5", "7"]  # the dataset's order, whatever order they were listed in
    for new, name in enumerate(sub.classes):
        old = raw.classes.index(name)
        assert np.array_equal(sub.inputs[sub.labels == new], raw.inputs[raw.labels == old])
    assert len(sub) == int(np.isin(raw.labels, [2, 5, 7]).sum())
    assert restrict_classes(raw, ["2", "5", "7"]) is restrict_classes(raw, ["2", "5", "7"])


def test_class_subset_of_texts_and_a_lazy_folder(tmp_path):
    from PIL import Image

    raw = load_dataset("rotten-tomatoes")
    sub = restrict_classes(raw, [raw.classes[1], raw.classes[0]])
    assert sub.inputs == raw.inputs and np.array_equal(sub.labels, raw.labels)
    for cls in ("a", "b", "c"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i + ord(cls) % 7, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    folder = load_dataset("image_folder", str(tmp_path / "imgs"))
    sub = restrict_classes(folder, ["a", "c"])
    assert len(sub) == 6 and sub.classes == ["a", "c"] and all("/b/" not in str(p) for p in sub.inputs.paths)
    assert np.array_equal(np.asarray(sub.inputs[3]), np.asarray(folder.inputs[6]))


def test_run_on_a_class_subset(tmp_path):
    m = _fit(tmp_path, "half", data={"classes": ["0", "3", "4", "9"]}).metrics
    assert m["data/num_classes"] == 4
    with np.load(tmp_path / "half" / "predictions.npz") as z:
        assert set(np.unique(z["label"])) <= {0, 1, 2, 3} and z["prob"].shape[1] == 4


def test_shifts_are_deterministic_and_grow_with_severity():
    gen_img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = torch.as_tensor(gen_img).permute(2, 0, 1).float() / 255
    raw = gen_img.tobytes()
    for name in SHIFTS:
        a, b = parse_shifts([f"{name}:2"])[0], parse_shifts([f"{name}:5"])[0]
        assert torch.equal(a(x, raw), a(x, raw)), name  # the same image is shifted the same way every time
        assert a(x, raw).shape == x.shape and 0 <= float(a(x, raw).min()) and float(a(x, raw).max()) <= 1
        low, high = (float((s(x, raw) - x).abs().mean()) for s in (a, b))
        assert 0 < low < high, name
    contrast = parse_shifts(["contrast:5"])[0]
    assert float(contrast(x, raw).std()) < 0.3 * float(x.std())
    assert parse_shifts(["blur"])[0].severity == 3 and parse_shifts(["blur"])[0].metric == "test_blur_3/acc"


def test_shifted_test_sets_are_reported_and_agree_cached_and_uncached(tmp_path):
    shifts = ["gaussian_noise:5", "contrast:4", "rotation:3"]
    sections = {"freeze": {"strategy": "depth", "depth": 2}, "trainer": {"max_epochs": 2}}
    cached = _fit(tmp_path, "c", **sections, data={"eval_shifts": shifts}).metrics
    plain = _fit(tmp_path, "p", **sections, data={"eval_shifts": shifts}, cache={"mode": "off"}).metrics
    assert cached["cache/used"] and not plain["cache/used"]
    stored = json.loads((tmp_path / "c" / "metrics.json").read_text())
    for s in parse_shifts(shifts):
        assert 0 <= cached[s.metric] <= 1 and stored[s.metric] == cached[s.metric]
        assert cached[s.metric] == pytest.approx(plain[s.metric], abs=1e-4), s.metric
    assert cached[MEAN_METRIC] == pytest.approx(np.mean([cached[s.metric] for s in parse_shifts(shifts)]))
    # the mean's per-example predictions: one block per shift, each reproducing its shift's accuracy; as a matrix,
    # one column per test image (its share of shifts right), whose mean is the recorded test_shifted/acc
    with np.load(tmp_path / "c" / "predictions_shifted.npz") as z:
        index, label, pred = z["index"], z["label"], z["pred"]
    with np.load(tmp_path / "c" / "predictions.npz") as z:
        test_index, test_label = z["index"], z["label"]
    n = len(test_index)
    assert len(index) == 3 * n and np.array_equal(index, np.tile(test_index, 3))
    assert np.array_equal(label, np.tile(test_label, 3))
    for k, s in enumerate(parse_shifts(shifts)):
        assert float((pred[k * n:(k + 1) * n] == test_label).mean()) == pytest.approx(cached[s.metric])
    trial = optuna.trial.create_trial(value=0.0, user_attrs={"run_dir": str(tmp_path / "c")})
    x, columns = correct_matrix([trial], [cached[MEAN_METRIC]], from_run_folder, MEAN_METRIC)
    assert x.shape == (1, n) and np.array_equal(columns, np.unique(test_index))
    assert set(np.round(3 * x.ravel()).astype(int)) <= {0, 1, 2, 3}
    assert correct_matrix([trial], [cached[MEAN_METRIC] + 0.01], from_run_folder, MEAN_METRIC) is None


def test_a_shifted_domain_shifts_every_split_and_keys_the_cache(tmp_path):
    """data.shift corrupts train, val and test alike (the cached rows differ from the clean ones), and the cached
    and uncached runs agree on it."""
    from tl_research.data.datamodule import input_collates
    from tl_research.inputs import ImageSpec

    spec = ImageSpec(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    exp = load_experiment(data=tiny_experiment(tmp_path, data={"shift": "gaussian_noise:5"}))
    clean = load_experiment(data=tiny_experiment(tmp_path))
    img = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
    shifted_eval, shifted_train = input_collates(spec, exp.data)
    plain_eval, _ = input_collates(spec, clean.data)
    for collate in (shifted_eval, shifted_train):
        assert not torch.equal(collate([(img, 0)])[0], plain_eval([(img, 0)])[0])
    assert torch.equal(shifted_eval([(img, 0)])[0], shifted_train([(img, 0)])[0])  # the same corrupted image
    assert features_options(exp.data) != features_options(clean.data)  # data.shift is keyed
    sections = {"freeze": {"strategy": "depth", "depth": 2}, "trainer": {"max_epochs": 2}}
    cached = _fit(tmp_path, "c", **sections, data={"shift": "gaussian_noise:5"}).metrics
    plain = _fit(tmp_path, "p", **sections, data={"shift": "gaussian_noise:5"}, cache={"mode": "off"}).metrics
    clean_run = _fit(tmp_path, "clean", **sections).metrics
    assert cached["cache/used"] and cached["cache/key"] != clean_run["cache/key"]
    assert cached["test/acc"] == pytest.approx(plain["test/acc"], abs=1e-4)


def test_a_shifted_domain_refuses_shifted_test_sets_on_top(tmp_path, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={"shift": "blur:2", "eval_shifts": ["contrast"]})))
    assert main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "data.eval_shifts: cannot be combined with data.shift" in err and err.count("\n") == 1


@pytest.mark.parametrize("value, message", [
    ('["fog"]', "data.eval_shifts[0]: unknown shift 'fog'"),
    ('["blur:9"]', "data.eval_shifts[0]: severity 9 is out of range"),
    ('["blur:2", "blur:2"]', "listed twice"),
])
def test_bad_shifts_are_one_line_errors(tmp_path, capsys, value, message):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    assert main(["fit", str(cfg), "--set", f"data.eval_shifts={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_shifts_on_text_and_unknown_classes_are_refused(tmp_path, tiny_bert, capsys):
    text = tiny_experiment(tmp_path, backbone={"name": f"hf/{tiny_bert}", "weights": "offline"},
                           data={"name": "rotten-tomatoes", "image_size": None, "eval_shifts": ["blur"]})
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(text))
    assert main(["fit", str(cfg)]) == 2
    assert "data.eval_shifts: shifts are image corruptions" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    for value, message in (("[0,11]", "data.classes: '11' is not a class of animal-mnist"),
                           ("[3]", "at least two classes"), ("[3,3]", "listed twice")):
        assert main(["fit", str(cfg), "--set", f"data.classes={value}"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
