"""Benchmark suites: a grid study sweeps a suite's tasks (each its own data section) × arms × seeds in real runs;
`tlr report` adds the per-group and overall mean over tasks with the t-over-tasks interval, checked here against
the runs' own metrics.json and scipy; the suite travels inside the study (workers elsewhere see the same cells);
bad suites are one line."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from tl_research.cli.main import main
from tl_research.findings.claims import check_claims
from tl_research.studies.studyspec import load_study, load_study_json

TASKS = {"animals": {"group": "shapes", "data": {"name": "animal-mnist"}},
         "digits": {"group": "shapes", "data": {"name": "digits"}},
         "low-digits": {"group": "characters", "data": {"name": "digits", "classes": ["0", "1", "2", "3", "4"]}}}


def _study(tmp_path: Path, study: dict, suite: dict | None = None) -> Path:
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"name": "mini", "tasks": suite or TASKS}))
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump({
        "experiment": {
            "name": "suite", "output_dir": str(tmp_path / "runs"), "tracking": {"mode": "disabled"},
            "backbone": {"name": "timm/test_efficientnet", "weights": "none"},
            "freeze": {"strategy": "depth", "depth": 2},
            "data": {"train_limit": 40, "eval_limit": 30, "image_size": 32, "batch_size": 16},
            "optim": {"lr": 0.01}, "trainer": {"max_epochs": 2, "patience": None, "accelerator": "cpu"}},
        "study": {"name": "mini", "kind": "grid", "suite": "suite.yaml", **study}}))
    return cfg


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_suite_study_runs_every_task_and_reports_the_mean_over_tasks(tmp_path):
    cfg = _study(tmp_path, {"grid": {"freeze.strategy": ["linear_probe", "depth"]}, "seeds": 2})
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(cfg), "--storage", url]) == 0
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("metrics.json")]
    assert len(runs) == 3 * 2 * 2
    by_cell: dict[tuple, list[float]] = {}
    for m in runs:  # the task's data section reached the run: its dataset and class count
        cfg_run = yaml.safe_load((Path(m["run_dir"]) / "config.yaml").read_text())
        task = {"animal-mnist": "animals", "digits": "low-digits" if m["data/num_classes"] == 5 else "digits"}[
            m["dataset"]]
        assert cfg_run["data"]["image_size"] == 32  # the base's data options stay
        by_cell.setdefault((cfg_run["freeze"]["strategy"], task), []).append(m["test/acc"])
    assert main(["report", "mini", "--storage", url, "--out", str(tmp_path / "report")]) == 0
    rows = _csv(tmp_path / "report" / "results.csv")
    md = (tmp_path / "report" / "results.md").read_text()
    assert "Mean over tasks" in md and "mean shapes (2 tasks)" in md and "mean all (3 tasks)" in md
    assert {r["col"] for r in rows} == {"animals", "digits", "low-digits", "mean:shapes", "mean:all"}
    for strategy in ("linear_probe", "depth"):
        means = {t: np.mean(by_cell[(strategy, t)]) for t in TASKS}
        got = next(r for r in rows if r["row"] == strategy and r["col"] == "mean:all")
        values = list(means.values())
        half = sps.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
        assert float(got["mean"]) == pytest.approx(np.mean(values), abs=1e-9)
        assert float(got["ci_low"]) == pytest.approx(max(0.0, np.mean(values) - half), abs=1e-9)  # an accuracy
        assert float(got["ci_high"]) == pytest.approx(min(1.0, np.mean(values) + half), abs=1e-9)
        assert got["ci_method"] == "t-over-tasks"
        shapes = next(r for r in rows if r["row"] == strategy and r["col"] == "mean:shapes")
        assert float(shapes["mean"]) == pytest.approx((means["animals"] + means["digits"]) / 2, abs=1e-9)
    diff = next(r for r in rows if r["row"] == "depth" and r["col"] == "mean:all")
    d = [np.mean(by_cell[("depth", t)]) - np.mean(by_cell[("linear_probe", t)]) for t in TASKS]
    assert float(diff["diff"]) == pytest.approx(np.mean(d), abs=1e-9)
    half = sps.t.ppf(1 - 0.05 / 4, 2) * np.std(d, ddof=1) / np.sqrt(3)  # 2 comparisons x 2 columns, Bonferroni
    assert float(diff["diff_high"]) == pytest.approx(np.mean(d) + half, abs=1e-9)
    # a claim on the mean over tasks: the same paired t over tasks, at its family's level (two claims here)
    claims = [{"id": "mean", "relation": ">", "a": {"freeze.strategy": "depth"},
               "b": {"freeze.strategy": "linear_probe"}, "mean_over": "task"},
              {"id": "shapes", "relation": ">", "a": {"freeze.strategy": "depth"},
               "b": {"freeze.strategy": "linear_probe"}, "mean_over": "task", "among": ["animals", "digits"]}]
    every, shapes = check_claims(claims, "mini", url)
    half = sps.t.ppf(1 - 0.05 / 4, 2) * np.std(d, ddof=1) / np.sqrt(3)
    assert every.effect == pytest.approx(np.mean(d), abs=1e-9) and every.method == "t-over-tasks"
    assert every.high == pytest.approx(np.mean(d) + half, abs=1e-9)
    assert every.verdict == ("held" if every.low > 0 else "failed" if every.high < 0 else "inconclusive")
    assert shapes.effect == pytest.approx(np.mean(d[:2]), abs=1e-9) and shapes.n == 2


def test_the_suite_travels_inside_the_study_and_a_task_subset_is_a_grid_key(tmp_path):
    cfg = _study(tmp_path, {"grid": {"task": ["digits", "animals"], "freeze.strategy": ["linear_probe"]}})
    spec = load_study(cfg)
    assert [c["task"] for c in spec.cells] == ["digits", "animals"]
    (tmp_path / "suite.yaml").unlink()  # a worker elsewhere has no suite file: the stored study holds it
    again = load_study_json(json.loads(json.dumps(spec.to_json())))
    assert again.cells == spec.cells
    assert again.experiment_for(again.cells[0]).data.name == "digits"


@pytest.mark.parametrize("study, suite, message", [
    ({"kind": "search", "params": {"optim.lr": {"type": "float", "low": 0.001, "high": 0.1}}}, None,
     "study.suite: a suite is swept by a grid study (this one is search)"),
    ({"grid": {"task": ["digits", "cifar"]}}, None, "study.grid.task: 'cifar' is not a task of suite mini"),
    ({"grid": {"freeze.strategy": ["full"]}}, {"t": {"group": "g"}}, "study.suite.tasks.t: a task needs a `data:`"),
    ({"grid": {"freeze.strategy": ["full"]}}, {"t": {"data": {"name": "no-such-data"}}}, "no-such-data"),
    ({"grid": {"freeze.strategy": ["full"]}}, {"t": {"data": {"name": "digits"}, "weight": 2}},
     "study.suite.tasks.t.weight: unknown key"),
])
def test_bad_suites_are_one_line(tmp_path, capsys, study, suite, message):
    cfg = _study(tmp_path, study, suite)
    assert main(["study", str(cfg), "--storage", f"sqlite:///{tmp_path / 'st.db'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "st.db").exists()


def test_every_tasks_data_is_checked_before_the_study_touches_its_storage(tmp_path, capsys):
    """A task whose data folder is missing, whose npz holds NaN pixels, or whose data the backbone cannot take (a
    text task under an image backbone): one line naming the task, before any cell runs or the storage exists."""
    pixels = np.random.default_rng(0).random((20, 8, 8))
    pixels[3, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=pixels, y=np.arange(20) % 2)
    for task, data, message in (
            ("folder", {"name": "image_folder", "root": str(tmp_path / "missing")}, "does not exist"),
            ("nan", {"name": "npz", "root": str(tmp_path / "nan.npz")}, "holds 1 NaN/inf values"),
            ("reviews", {"name": "rotten-tomatoes"}, "holds text data but the backbone takes image")):
        cfg = _study(tmp_path, {"grid": {"freeze.strategy": ["full"]}}, {**TASKS, task: {"data": data}})
        assert main(["study", str(cfg), "--storage", f"sqlite:///{tmp_path / 'st.db'}"]) == 2
        err = capsys.readouterr().err
        assert f"study.suite.tasks.{task}: " in err and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "st.db").exists() and not (tmp_path / "runs").exists()


def test_a_missing_suite_file_is_one_line(tmp_path, capsys):
    cfg = _study(tmp_path, {"grid": {"freeze.strategy": ["full"]}})
    (tmp_path / "suite.yaml").unlink()
    assert main(["study", str(cfg), "--dry-run"]) == 2
    assert "study.suite: no suite file 'suite.yaml'" in capsys.readouterr().err


def test_the_shipped_suites_and_their_studies_load():
    from tl_research.studies.suites import load_suite

    vtab = load_suite("benchmarks/suites/vtab1k.yaml")
    assert len(vtab["tasks"]) == 19
    assert {g: sum(t["group"] == g for t in vtab["tasks"].values()) for g in ("natural", "specialized", "structured")
            } == {"natural": 7, "specialized": 4, "structured": 8}
    spec = load_study("benchmarks/suites/offline_mnv2.yaml")
    assert {c["task"] for c in spec.cells} == {"animal-mnist", "fashion-mnist", "digits"} and len(spec.cells) == 18
    assert all(spec.experiment_for(c).data.protocol == "vtab1k" for c in spec.cells)
