"""`tlr report` against an independent computation from the stored trials."""

import csv
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from PIL import Image
from scipy import stats

from tl_research.cli import main
from tl_research.study import create_or_load, open_storage
from tl_research.studyspec import load_study

STRATEGIES, SHOTS, SEEDS = ["linear_probe", "depth", "full"], [4, 16, 64], [0, 1, 2]


@pytest.fixture
def study_db(tmp_path):
    """A few-shot grid study whose trials carry known metrics (added to a real SQLite storage)."""
    import yaml

    cfg = tmp_path / "fs.yaml"
    cfg.write_text(yaml.safe_dump({
        "experiment": {"name": "fs", "output_dir": str(tmp_path / "runs"), "tracking": {"mode": "disabled"},
                       "freeze": {"depth": 12}},
        "study": {"name": "fs", "kind": "grid", "seeds": 3,
                  "grid": {"freeze.strategy": STRATEGIES, "data.shots": SHOTS}}}))
    spec = load_study(cfg)
    url = f"sqlite:///{tmp_path / 'st.db'}"
    study = create_or_load(spec, open_storage(url))
    rng = np.random.default_rng(0)
    truth = {}
    dists = {"freeze.strategy": CategoricalDistribution(STRATEGIES), "data.shots": CategoricalDistribution(SHOTS),
             "seed": CategoricalDistribution(SEEDS)}
    for s_i, strategy in enumerate(STRATEGIES):
        for shots in SHOTS:
            for seed in SEEDS:
                if (strategy, shots, seed) == ("full", 64, 2):
                    continue  # one missing cell
                acc = 0.5 + 0.1 * s_i + 0.05 * math.log2(shots) / 6 + rng.normal(0, 0.02)
                truth[(strategy, shots, seed)] = acc
                study.add_trial(optuna.trial.create_trial(
                    params={"freeze.strategy": strategy, "data.shots": shots, "seed": seed}, distributions=dists,
                    values=[acc], user_attrs={"test/acc": acc, "val/acc": acc,
                                              "throughput/train_samples_per_sec": 100.0 * (s_i + 1),
                                              "params/trainable": 1000 * (s_i + 1)}))
    return url, truth


def test_report_numbers_match_an_independent_computation(tmp_path, study_db, capsys):
    url, truth = study_db
    out = tmp_path / "report"
    assert main(["report", "fs", "--storage", url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 cell(s) missing" in printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 9
    for r in rows:
        strategy, shots = r["row"], int(r["col"])
        vals = [truth[(strategy, shots, s)] for s in SEEDS if (strategy, shots, s) in truth]
        n = len(vals)
        mean, std = np.mean(vals), np.std(vals, ddof=1)
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        assert int(r["n"]) == n
        assert float(r["mean"]) == pytest.approx(mean) and float(r["std"]) == pytest.approx(std)
        assert float(r["ci_low"]) == pytest.approx(mean - half) and float(r["ci_high"]) == pytest.approx(mean + half)
        if strategy != "linear_probe":
            seeds = [s for s in SEEDS if (strategy, shots, s) in truth]
            a = [truth[(strategy, shots, s)] for s in seeds]
            b = [truth[("linear_probe", shots, s)] for s in seeds]
            assert float(r["p_ttest"]) == pytest.approx(stats.ttest_rel(a, b).pvalue)
            assert float(r["p_wilcoxon"]) == pytest.approx(stats.wilcoxon(a, b).pvalue)
    md = (out / "results.md").read_text()
    assert md.count("**0.") == 3  # one bold best per column
    assert "\\textbf" in (out / "results.tex").read_text()
    for name in ("few_shot.png", "accuracy_vs_throughput.png"):
        with Image.open(out / name) as img:
            img.verify()
        assert (out / name).stat().st_size > 5000


def test_report_bad_input(tmp_path, study_db, capsys):
    url, _ = study_db
    assert main(["report", "nope", "--storage", url]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    assert main(["report", "fs", "--storage", url, "--rows", "optim.lr", "--out", str(tmp_path / "r")]) == 2
    assert "--rows: 'optim.lr' is not a parameter" in capsys.readouterr().err
    optuna.create_study(study_name="empty", storage=open_storage(url)).set_user_attr(
        "tlr_spec", optuna.load_study(study_name="fs", storage=open_storage(url)).user_attrs["tlr_spec"])
    assert main(["report", "empty", "--storage", url]) == 2
    assert "has no completed trial" in capsys.readouterr().err


def test_depth_ablation_gets_a_depth_curve(tmp_path):
    import yaml

    from tl_research.report import run_report

    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump({
        "experiment": {"name": "d", "tracking": {"mode": "disabled"}, "freeze": {"strategy": "depth", "depth": 0}},
        "study": {"name": "d", "kind": "grid", "seeds": 2, "grid": {"freeze.depth": [0, 6, 12, 18]}}}))
    url = f"sqlite:///{tmp_path / 'd.db'}"
    study = create_or_load(load_study(cfg), open_storage(url))
    dists = {"freeze.depth": CategoricalDistribution([0, 6, 12, 18]), "seed": CategoricalDistribution([0, 1])}
    for depth in (0, 6, 12, 18):
        for seed in (0, 1):
            acc = 0.9 - depth / 100 + seed / 1000
            study.add_trial(optuna.trial.create_trial(params={"freeze.depth": depth, "seed": seed},
                                                      distributions=dists, values=[acc],
                                                      user_attrs={"test/acc": acc}))
    table, files = run_report("d", url, tmp_path / "out")
    assert table.rows == ["all"] and table.cols == [0, 6, 12, 18]
    assert table.cells[("all", 6)].mean == pytest.approx(0.9 - 0.06 + 0.0005)
    assert (tmp_path / "out" / "freeze_depth.png") in files
