"""`tlr report` against an independent computation from the stored trials."""

import csv
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from PIL import Image
from scipy import stats as sp

from tests.conftest import grid_study, predictions_study
from tl_research.cli.main import main
from tl_research.errors import UserError
from tl_research.studies.storage import open_storage
from tl_research.studies.study import create_or_load
from tl_research.studies.studyspec import load_study

STRATEGIES, SHOTS, SEEDS = ["linear_probe", "depth", "full"], [4, 16, 64], [0, 1, 2]


@pytest.fixture
def study_db(tmp_path):
    """A few-shot grid study whose trials carry known metrics (added to a real SQLite storage)."""
    rng = np.random.default_rng(0)
    truth = {(strategy, shots, seed): 0.5 + 0.1 * s_i + 0.05 * math.log2(shots) / 6 + rng.normal(0, 0.02)
             for s_i, strategy in enumerate(STRATEGIES) for shots in SHOTS for seed in SEEDS}
    del truth[("full", 64, 2)]  # one missing cell
    url = grid_study(tmp_path, "fs", STRATEGIES, SHOTS, SEEDS, truth)
    return url, truth


def test_report_numbers_match_an_independent_computation(tmp_path, study_db, capsys):
    url, truth = study_db
    out = tmp_path / "report"
    assert main(["report", "fs", "--storage", url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 cell(s) missing" in printed and "Bonferroni" in printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 9
    family = 6  # depth and full against linear_probe at 3 shot counts
    for r in rows:
        strategy, shots = r["row"], int(r["col"])
        vals = [truth[(strategy, shots, s)] for s in SEEDS if (strategy, shots, s) in truth]
        assert int(r["n"]) == len(vals)
        assert float(r["mean"]) == pytest.approx(np.mean(vals)) and float(r["std"]) == pytest.approx(
            np.std(vals, ddof=1))
        # no per-example predictions in these trials: Student-t over seeds, labelled as leaving out the test set
        assert r["ci_method"] == "seeds-t"
        ref = sp.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=sp.sem(vals))
        assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(ref)
        if strategy != "linear_probe":
            seeds = [s for s in SEEDS if (strategy, shots, s) in truth]
            a = [truth[(strategy, shots, s)] for s in seeds]
            b = [truth[("linear_probe", shots, s)] for s in seeds]
            test = sp.ttest_rel(a, b)
            assert float(r["p_adjusted"]) == pytest.approx(min(1.0, family * test.pvalue))
            ci = test.confidence_interval(1 - 0.05 / family)  # simultaneous, Bonferroni over the family
            assert (float(r["diff_low"]), float(r["diff_high"])) == pytest.approx((ci.low, ci.high))
            assert float(r["diff"]) == pytest.approx(np.mean(a) - np.mean(b)) and r["test"] == "seeds-t"
    md = (out / "results.md").read_text()
    assert md.count("**0.") == 3  # one bold best per column
    assert "\\textbf" in (out / "results.tex").read_text() and "(3)" in (out / "results.tex").read_text()
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

    from tl_research.reports.report import run_report

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



def test_a_third_swept_key_joins_the_rows_instead_of_hiding_cells(tmp_path):
    """lr_factor x schedule x shots (ULMFiT's grid): rows lr_factor, cols shots; the schedule must not collapse
    two cells into one (each seed kept one of them before)."""
    import yaml

    from tl_research.reports.report import run_report

    cfg = tmp_path / "u.yaml"
    grid = {"freeze.lr_factor": [1.0, 2.6], "optim.schedule": ["constant", "slanted_triangular"],
            "data.shots": [50, 250]}
    cfg.write_text(yaml.safe_dump({
        "experiment": {"name": "u", "tracking": {"mode": "disabled"}, "freeze": {"strategy": "gradual_unfreeze"}},
        "study": {"name": "u", "kind": "grid", "seeds": 2, "grid": grid}}))
    url = f"sqlite:///{tmp_path / 'u.db'}"
    study = create_or_load(load_study(cfg), open_storage(url))
    dists = {**{k: CategoricalDistribution(v) for k, v in grid.items()}, "seed": CategoricalDistribution([0, 1])}
    for factor in grid["freeze.lr_factor"]:
        for schedule in grid["optim.schedule"]:
            for shots in grid["data.shots"]:
                for seed in (0, 1):
                    acc = 0.5 + shots / 1000 + (factor == 2.6) * 0.1 + (schedule == "constant") * 0.01 + seed / 100
                    study.add_trial(optuna.trial.create_trial(
                        params={"freeze.lr_factor": factor, "optim.schedule": schedule, "data.shots": shots,
                                "seed": seed}, distributions=dists, values=[acc], user_attrs={"test/acc": acc}))
    table, _ = run_report("u", url, tmp_path / "out", rows="freeze.lr_factor", cols="data.shots")
    assert table.rows == ["1.0, constant", "1.0, slanted_triangular", "2.6, constant", "2.6, slanted_triangular"]
    assert table.rows_key == "freeze.lr_factor, optim.schedule"
    assert table.cells[("2.6, slanted_triangular", 250)].mean == pytest.approx(0.5 + 0.25 + 0.1 + 0.005)
    assert table.cells[("1.0, constant", 50)].mean == pytest.approx(0.5 + 0.05 + 0.01 + 0.005)
    assert "| 2.6, slanted_triangular |" in (tmp_path / "out" / "results.md").read_text()
    table, _ = run_report("u", url, tmp_path / "out", rows="freeze.lr_factor", baseline="2.6, constant")
    assert table.baseline == "2.6, constant" and ("1.0, constant", 50) in table.vs_baseline
    with pytest.raises(UserError, match="--baseline: '2.6' is not a row"):
        run_report("u", url, tmp_path / "out", rows="freeze.lr_factor", baseline="2.6")

@pytest.mark.parametrize("seeds", [1, 2, 10])
def test_one_two_and_ten_seeds_give_sensible_tables(tmp_path, seeds):
    from tl_research.reports.report import run_report

    url = predictions_study(tmp_path, seeds, size=1000 if seeds == 1 else 200)  # one seed: power from examples
    run_report(f"n{seeds}", url, tmp_path / "out")
    rows = {r["row"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open())}
    md = (tmp_path / "out" / "results.md").read_text()
    assert all(0 <= float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]) <= 1 for r in rows.values())
    assert rows["full"]["best"] == "True"
    for r in rows.values():  # one rule: p < alpha exactly when the (simultaneous) interval excludes 0
        if r["row"] != "linear_probe":
            excludes = float(r["diff_low"]) > 0 or float(r["diff_high"]) < 0
            assert (float(r["p_adjusted"]) < 0.05) == excludes
        if r["row"] != "full":
            assert (r["worse_than_best"] == "True") == (float(r["diff_to_best_low"]) > 0)
            assert float(r["p_vs_best_adjusted"]) < 0.05 or r["worse_than_best"] == "False"
    if seeds == 1:
        # one run per cell: its Wilson interval, and the paired t over the shared test examples
        assert {r["ci_method"] for r in rows.values()} == {"wilson-one-seed"}
        assert rows["full"]["test"] == "paired-t-one-seed" and float(rows["full"]["p_adjusted"]) < 0.05
    else:
        assert {r["ci_method"] for r in rows.values()} == {"crossed-t"}
        assert rows["full"]["test"] == "crossed-t"
    if seeds == 10:
        assert float(rows["full"]["p_adjusted"]) < 0.05 and float(rows["depth"]["p_adjusted"]) > 0.05
        assert rows["linear_probe"]["worse_than_best"] == "True" and rows["depth"]["worse_than_best"] == "True"
    assert "Bonferroni" in md and "α = 0.05" in md


def test_a_row_far_below_the_best_is_worse_in_the_table_and_in_tlr_check(tmp_path, capsys):
    """Five seeds, a row 0.30 below the best on 200 shared test examples (a random-init backbone beside a
    pretrained one): the table marks it worse (no †), and a claim on the same cells is held; a row level with the
    baseline is undecided in both."""
    import yaml

    from tl_research.findings.claims import check_claims
    from tl_research.reports.report import run_report

    url = predictions_study(tmp_path, 5, effect=0.3)
    table, _ = run_report("n5", url, tmp_path / "out")
    assert table.best["all"] == "full" and table.worse(("linear_probe", "all"))
    assert "0.7" in (tmp_path / "out" / "results.md").read_text().split("| linear_probe |")[1].split("|")[0]
    assert "†" not in (tmp_path / "out" / "results.md").read_text().split("| linear_probe |")[1].split("\n")[0]
    claims = [{"id": "big", "a": {"freeze.strategy": "full"}, "relation": ">",
               "b": {"freeze.strategy": "linear_probe"}},
              {"id": "level", "a": {"freeze.strategy": "depth"}, "relation": ">",
               "b": {"freeze.strategy": "linear_probe"}}]
    verdicts = {v.id: v for v in check_claims(claims, "n5", url)}
    assert verdicts["big"].verdict == "held" and verdicts["big"].method == "crossed-t"
    assert verdicts["level"].verdict == "inconclusive"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"claims": claims}))
    assert main(["check", "n5", str(tmp_path / "c.yaml"), "--storage", url]) == 0
    assert "held" in capsys.readouterr().out


def test_report_wandb_run_holds_the_statistics_table(tmp_path, monkeypatch):
    import json

    from tl_research.adapters.wandb import decode, run_file
    from tl_research.reports.report import run_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    url = predictions_study(tmp_path, 3)
    run_report("n3", url, tmp_path / "out")
    folders = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    run = decode(run_file(folders[0]))
    assert run["run"].job_type == "report"
    row = next(r for r in run["history"] if "report/table/_type" in r)
    table = json.loads((folders[0] / "files" / row["report/table/path"]).read_text())
    assert {"ci_low", "ci_high", "p_adjusted", "diff", "worse_than_best"} <= set(table["columns"])
    assert len(table["data"]) == 3


def test_few_shot_report_logs_a_native_line_plot(tmp_path, study_db, monkeypatch):
    from tl_research.adapters.wandb import decode, run_file
    from tl_research.reports.report import curve_series, run_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    url, _ = study_db
    table, _ = run_report("fs", url, tmp_path / "out")
    series = curve_series(table)
    assert {"linear_probe", "linear_probe (low)", "linear_probe (high)"} <= set(series)
    assert all(lo <= m <= hi for lo, m, hi in zip(series["full (low)"][1], series["full"][1], series["full (high)"][1]))
    folder = next((tmp_path / "out" / "wandb").glob("offline-run-*"))
    history = decode(run_file(folder))["history"]
    assert any(k.startswith("report/curve_data_shots") for row in history for k in row)


def test_runs_that_learned_nothing_are_flagged_in_metrics_and_report(tmp_path, capsys):
    """A real study whose lr is too small to move anything: every run ends at chance with its loss where it began,
    metrics.json flags it and the report names the cell."""
    import json

    import yaml

    from tests.conftest import tiny_experiment

    exp = tiny_experiment(tmp_path, data={"classes": ["1", "4", "7"], "train_limit": 30, "eval_limit": 60},
                          trainer={"max_epochs": 1, "patience": None, "progress_bar": False, "accelerator": "cpu"})
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"experiment": exp, "study": {
        "name": "still", "kind": "grid", "grid": {"optim.lr": [1e-12]}, "seeds": 2}}))
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(cfg), "--storage", url]) == 0
    trials = optuna.load_study(study_name="still", storage=url).trials
    flags = [json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())["flag/at_chance"]
             for t in trials]
    assert flags == [True, True]
    capsys.readouterr()
    assert main(["report", "still", "--storage", url, "--out", str(tmp_path / "rep")]) == 0
    assert "⚠ Runs that learned nothing" in capsys.readouterr().out
    assert "1e-12: 2 of 2" in (tmp_path / "rep" / "results.md").read_text()
    fit = tmp_path / "e.yaml"
    fit.write_text(yaml.safe_dump(exp))
    assert main(["fit", str(fit), "--set", "optim.lr=1e-12", "--out", str(tmp_path / "one")]) == 0
    assert "warning: this run learned nothing" in capsys.readouterr().err


def test_a_registered_plot_is_drawn_by_every_report(tmp_path, study_db, monkeypatch):
    """A report plot is one registered function of the report's data (a plugin registers its own the same way)."""
    from tl_research.reports.plots import PLOTS
    from tl_research.reports.report import run_report

    seen = []

    def cells_per_row(data, out):
        seen.append((data.spec.name, len(data.trials), data.table.rows))
        path = out / "cells_per_row.txt"
        path.write_text("\n".join(f"{r} {sum(k[0] == r for k in data.table.cells)}" for r in data.table.rows))
        return [path]

    monkeypatch.setitem(PLOTS._entries, "cells_per_row", cells_per_row)
    url, truth = study_db
    table, files = run_report("fs", url, tmp_path / "out", track=False)
    assert tmp_path / "out" / "cells_per_row.txt" in files and tmp_path / "out" / "few_shot.png" in files
    assert seen == [("fs", len(truth), sorted(STRATEGIES))]
    assert (tmp_path / "out" / "cells_per_row.txt").read_text().split("\n") == ["depth 3", "full 3",
                                                                                 "linear_probe 3"]
