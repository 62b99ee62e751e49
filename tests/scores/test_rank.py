"""`tlr rank`: backbones x depths scored from cached frozen features."""

import csv
import json

import pytest
import yaml

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.scores.rank import ordered, rank
from tl_research.scores.registry import score_names


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={"train_limit": None})))
    return path


def test_rank_tiny_twins(tmp_path, cfg, capsys):
    out = tmp_path / "rank"
    assert main(["rank", str(cfg), "--backbones", "timm/test_efficientnet,timm/test_resnet", "--depths", "1,2",
                 "--per-class", "8", "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and {(r["backbone"], r["depth"]) for r in rows} == {
        (b, k) for b in ("timm/test_efficientnet", "timm/test_resnet") for k in (1, 2)}
    logmes = [r["logme"] for r in rows]
    assert logmes == sorted(logmes, reverse=True)  # best first
    for r in rows:
        assert r["examples"] == 80 and r["leep"] is None and r["nce"] is None  # random weights: no source head
        assert 0 <= r["knn"] <= 1 and 0 <= r["probe"] <= 1 and r["seconds"] > 0
    assert len(list(csv.DictReader((out / "rank.csv").open()))) == 4 and "| backbone |" in (out / "rank.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--backbones", "timm/test_resnet", "--depths", "99"], "--depths: 99 is outside 1.."),
    (["--backbones", "timm/test_resnet", "--depths", "one"], "--depths: expected comma-separated integers"),
    (["--backbones", "timm/test_resnet", "--by", "magic"], "--by: 'magic' is not a score"),
    (["--backbones", "timm/nosuchnet"], "backbone.name: unknown timm model"),
    (["--backbones", ","], "--backbones: name at least one backbone"),
])
def test_rank_bad_input(cfg, capsys, args, message):
    assert main(["rank", str(cfg), *args, "--per-class", "4"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_pretrained_features_rank_above_random_ones(tmp_path):
    """Real path: the offline MobileNetV2 on Animal-MNIST against its own random-init twin; LEEP and NCE from the
    ImageNet classifier shipped with the weights."""
    base = {"data": {"name": "animal-mnist", "image_size": 64}, "tracking": {"mode": "disabled"}}
    pretrained = rank(load_experiment(data=base), ["timm/mobilenetv2_100"], [12, 18], per_class=30)
    random = rank(load_experiment(data={**base, "backbone": {"weights": "none"}}), ["timm/mobilenetv2_100"], [18],
                  per_class=30)
    full = next(c for c in pretrained if c.depth == 18)
    for score in ("logme", "knn", "probe"):
        assert full.scores[score] > random[0].scores[score], score
    assert full.scores["leep"] <= 0 and full.scores["nce"] <= 0
    assert set(full.scores) == set(score_names())
    assert ordered(pretrained, "probe")[0].scores["probe"] >= full.scores["probe"]


@pytest.mark.slow
def test_validation_benchmark_smoke_variant(tmp_path):
    """benchmarks/transferability.py end to end at smoke scale: fine-tuning studies on real weights and data, the
    scores of the same candidates, and every score's agreement with the fine-tuned accuracies."""
    import csv
    import runpy

    bench = runpy.run_path("benchmarks/transferability.py")
    assert bench["main"](["--smoke", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "transferability.csv").open()))
    got = {(r["dataset"], r["score"]) for r in rows}
    assert {("digits", "logme"), ("digits", "knn"), ("digits", "probe"), ("rotten-tomatoes", "logme")} <= got
    assert ("rotten-tomatoes", "leep") not in got  # no source classifier for the text encoder
    for r in rows:
        assert -1 <= float(r["tau_lo"]) <= float(r["tau"]) <= float(r["tau_hi"]) <= 1
        assert int(r["candidates"]) >= 6 and float(r["regret"]) >= 0
    md = (tmp_path / "transferability.md").read_text()
    assert "| digits | timm/mobilenetv2_100 | none | 8 |" in md
    assert "| which depth, for a fixed backbone | logme |" in md


def test_benchmark_asks_backbone_and_depth_separately():
    """Constructed candidates: a score that orders backbones right but prefers deeper frozen features while
    fine-tuning prefers shallower ones agrees on one question and disagrees on the other; a score constant over
    depths (LEEP) gets no depth row."""
    import runpy

    bench = runpy.run_path("benchmarks/transferability.py")
    cells, scores = {}, {}
    for b, quality in (("a", 0.9), ("b", 0.8), ("c", 0.7)):
        for depth in (2, 4, 6):
            key = ("d", b, "offline", depth)
            cells[key] = quality - depth / 100  # freezing more loses accuracy
            scores[key] = {"logme": quality + depth / 1000, "leep": quality}  # deeper features score higher
    rows = {(r["question"].split(",")[0], r["score"]): r for r in bench["by_question"](cells, scores)}
    backbone, depth = rows[("which backbone", "logme")], rows[("which depth", "logme")]
    assert backbone["groups"] == 3 and backbone["tau"] == pytest.approx(1) and backbone["hits"] == 3
    assert depth["groups"] == 3 and depth["tau"] == pytest.approx(-1) and depth["hits"] == 0
    assert depth["regret"] == pytest.approx(0.04)
    assert ("which backbone", "leep") in rows and ("which depth", "leep") not in rows


def test_the_pretrained_only_question_leaves_the_random_init_control_out(tmp_path):
    """A score that ranks the random-init control last but the pretrained backbones backwards has a positive τ
    with the control and τ = −1 among the pretrained ones; --rejudge rebuilds the committed by-question table from
    its per-candidate table, the old rows unchanged."""
    import runpy
    import shutil

    bench = runpy.run_path("benchmarks/transferability.py")
    cells, scores = {}, {}
    for b, weights, quality, score in (("a", "offline", 0.9, 0.1), ("b", "offline", 0.8, 0.2),
                                       ("c", "offline", 0.7, 0.3), ("r", "none", 0.2, -5.0)):
        cells[("d", b, weights, 4)] = quality
        scores[("d", b, weights, 4)] = {"logme": score}
    rows = {r["question"]: r for r in bench["by_question"](cells, scores) if r["score"] == "logme"}
    assert rows["which backbone, at a fixed depth"]["tau"] == pytest.approx(0.0)
    assert rows["which pretrained backbone, at a fixed depth"]["tau"] == pytest.approx(-1.0)
    shutil.copy("benchmarks/results/transferability.md", tmp_path / "transferability.md")
    committed = (tmp_path / "transferability.md").read_text()
    assert bench["main"](["--rejudge", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "transferability.md").read_text() == committed  # the committed file is already rejudged
