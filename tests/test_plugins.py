"""Plugins: a user's own strategy and dataset, named in a study YAML or installed as a package's entry point, reach
every worker process; a worker whose copy is missing or changed stops with one line; listings say where entries
come from; report and predict on a plugin study's runs work in a fresh process; a study whose workers all fail
exits 1. Every command runs in its own process (a plugin registers into the registries of the process it is
imported in, so it must not leak into the other tests)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tl_research.reports import archive
from tl_research.studies.storage import open_storage

TLR = [sys.executable, "-m", "tl_research.cli"]

# a user's own strategy (the last layer group and the head train) and dataset (class-dependent noise images), a
# score, a report plot and a backbone family delegating to timm
PLUGIN = textwrap.dedent('''
    """A lab's own method."""
    from dataclasses import dataclass
    from typing import Annotated

    import numpy as np

    from tl_research.backbones.families import FAMILIES, register_family
    from tl_research.data.registry import DatasetInfo, RawDataset, register_dataset
    from tl_research.reports.plots import register_plot
    from tl_research.schema import bounds
    from tl_research.scores.registry import register_score
    from tl_research.strategies.freeze_plan import FreezePlan, register


    @register("last_group_only")
    @dataclass(frozen=True)
    class LastGroupOnly:
        """Trains the last layer group and the head; every other group frozen."""

        def plan(self, num_groups: int, epoch: int) -> FreezePlan:
            return FreezePlan(tuple(i == num_groups - 1 for i in range(num_groups)), (1.0,) * num_groups)


    def _blobs(root, options, per_class: Annotated[int, bounds(ge=4)] = 20):
        rng = np.random.default_rng(0)
        labels = np.arange(3 * per_class) % 3
        images = rng.integers(0, 80, (len(labels), 32, 32, 3)) + 60 * labels[:, None, None, None]
        return RawDataset("lab-blobs", "image", images.astype(np.uint8), labels, ["a", "b", "c"])


    register_dataset(DatasetInfo("lab-blobs", "image", _blobs, description="three classes of noise"))


    @register_score("lab_spread", "features", 99)
    def lab_spread(features, labels):
        """The features' spread."""
        return float(features.std())


    @register_plot("lab_trials")
    def lab_trials(data, out):
        """How many trials the report read."""
        (out / "lab_trials.txt").write_text(str(len(data.trials)))
        return [out / "lab_trials.txt"]


    @register_family("lab")
    def lab(ident, weights, coarse: bool = False):
        """timm models under the lab's name."""
        return FAMILIES.get("timm", "backbone.name")(ident, weights, coarse=coarse)
''')

EXPERIMENT = {"name": "pl", "tracking": {"mode": "disabled"},
              "backbone": {"name": "timm/test_efficientnet", "weights": "none"},
              "data": {"name": "lab-blobs", "per_class": 15, "eval_limit": 12, "image_size": 32, "batch_size": 16},
              "trainer": {"max_epochs": 1, "patience": None, "accelerator": "cpu"}}


def _tlr(*argv: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TLR, *argv], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, **(env or {})})


def _study_yaml(tmp_path: Path, name: str, plugins: list[str] | None) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        **({"plugins": plugins} if plugins else {}),
        "experiment": {**EXPERIMENT, "output_dir": str(tmp_path / "runs")},
        "study": {"name": name, "kind": "grid", "seeds": 1,
                  "grid": {"freeze.strategy": ["last_group_only", "linear_probe"]}}}))
    return path


def _completed(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def test_a_plugin_named_in_a_study_yaml_reaches_every_worker_and_every_later_process(tmp_path):
    """A grid study of the plugin's strategy on the plugin's dataset, the plugin named by a file path in the study
    YAML (relative to it), run by two worker processes; then report and predict in fresh processes; then a worker
    whose copy of the plugin changed, or is gone."""
    (tmp_path / "lab").mkdir()
    plugin = tmp_path / "lab" / "my_method.py"
    plugin.write_text(PLUGIN)
    url = f"sqlite:///{tmp_path / 'st.db'}"
    done = _tlr("study", str(_study_yaml(tmp_path / "lab", "pl", ["my_method.py"])), "--storage", url,
                "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = _completed(url, "pl")
    assert sorted(t.params["freeze.strategy"] for t in trials) == ["last_group_only", "linear_probe"]
    for t in trials:
        record = json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())
        # the cell ran in a worker process, which imported the plugin by its absolute path
        assert record["command"][1:3] == ["worker", "--study"], record["command"]
        assert [p["name"] for p in record["plugins"]] == [str(plugin)]
        # the dataset's own option (data.per_class: 15 of its default 20) reached the worker's loader
        assert t.user_attrs["data/train_size"] + t.user_attrs["data/val_size"] + t.user_attrs["data/test_size"] == 45
    trainable = {t.params["freeze.strategy"]: t.user_attrs["params/trainable"] for t in trials}
    assert trainable["last_group_only"] > trainable["linear_probe"]  # its own rule trained a group besides the head

    # a finding's archive keeps the plugins and their digests (re-judging it imports them)
    source = optuna.load_study(study_name="pl", storage=open_storage(url)).user_attrs["tlr_plugins"]
    assert [p["name"] for p in source] == [str(plugin)]
    archive.export(["pl"], open_storage(url), tmp_path / "archive")
    archived = optuna.load_study(study_name="pl", storage=archive.Archive(tmp_path / "archive").storage)
    assert archived.user_attrs["tlr_plugins"] == source

    report = _tlr("report", "pl", "--storage", url, "--out", str(tmp_path / "rep"))
    assert report.returncode == 0, report.stderr
    assert "last_group_only" in report.stdout
    assert (tmp_path / "rep" / "lab_trials.txt").read_text() == "2"  # the plugin's own report plot
    run_dir = next(t.user_attrs["run_dir"] for t in trials if t.params["freeze.strategy"] == "last_group_only")
    np.savez(tmp_path / "x.npz", x=np.full((4, 32, 32, 3), 200, np.uint8))
    predicted = _tlr("predict", run_dir, str(tmp_path / "x.npz"), "--out", str(tmp_path / "p.csv"))
    assert predicted.returncode == 0, predicted.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 5  # a header and one row per image

    plugin.write_text(PLUGIN + "\n# tuned the rule\n")
    changed = _tlr("worker", "--study", "pl", "--storage", url)
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1 and f"plugin {plugin} differs" in changed.stderr, changed.stderr
    plugin.unlink()
    missing = _tlr("worker", "--study", "pl", "--storage", url)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and f"plugin file {plugin} does not exist" in missing.stderr, \
        missing.stderr


def test_a_runs_plugins_and_their_digests_are_in_its_record_and_its_wandb_config(tmp_path):
    from tl_research.adapters.wandb import decode, run_file

    (tmp_path / "my_method.py").write_text(PLUGIN)
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({
        **EXPERIMENT, "plugins": ["my_method.py"], "freeze": {"strategy": "last_group_only"},
        "tracking": {"mode": "offline"}}))
    done = _tlr("fit", str(tmp_path / "e.yaml"), "--out", str(tmp_path / "run"), env={"WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())["plugins"]
    assert [p["name"] for p in record] == [str(tmp_path / "my_method.py")] and len(record[0]["digest"]) == 24
    logged = next((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert decode(run_file(logged))["config"]["plugins"] == record


def test_listings_say_which_plugin_an_entry_comes_from(tmp_path):
    (tmp_path / "my_method.py").write_text(PLUGIN)
    named = str(tmp_path / "my_method.py")
    strategies = _tlr("--plugin", named, "strategies")
    assert strategies.returncode == 0, strategies.stderr
    line = next(x for x in strategies.stdout.splitlines() if x.startswith("last_group_only:"))
    assert line.endswith(f"[plugin {named}]")
    assert not next(x for x in strategies.stdout.splitlines() if x.startswith("full:")).endswith("]")
    datasets = _tlr("--plugin", named, "datasets", "--json")
    rows = {r["name"]: r for r in json.loads(datasets.stdout)}
    assert rows["lab-blobs"]["from"] == f"plugin {named}" and rows["animal-mnist"]["from"] == "built-in"
    backbones = _tlr("--plugin", named, "backbones")
    assert f"lab/ (plugin {named})" in backbones.stdout and "timm/ (built-in)" in backbones.stdout
    rank = _tlr("--plugin", named, "rank", "--help")
    assert f"lab_spread(plugin{named})" in "".join(rank.stdout.split())  # (argparse wraps the epilog anywhere)
    # a family plugin entry builds a backbone like any other
    inspected = _tlr("--plugin", named, "inspect", "lab/test_efficientnet", "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["groups"] == json.loads(
        _tlr("inspect", "timm/test_efficientnet", "--json").stdout)["groups"]


def test_a_bad_plugin_is_one_line_naming_it(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('needs the lab GPU kit')\n")
    broken = _tlr("--plugin", str(tmp_path / "broken.py"), "strategies")
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1
    assert "broken.py' failed on import (RuntimeError: needs the lab GPU kit)" in broken.stderr
    nope = _tlr("strategies", env={"TLR_PLUGINS": "no_such_lab_module"})
    assert nope.returncode == 2 and nope.stderr.count("\n") == 1
    assert "TLR_PLUGINS: plugin 'no_such_lab_module' cannot be imported" in nope.stderr
    (tmp_path / "clash.py").write_text("from tl_research.strategies.freeze_plan import register\n"
                                       "@register('full')\nclass Full:\n    pass\n")
    clash = _tlr("--plugin", str(tmp_path / "clash.py"), "strategies")
    assert clash.returncode == 2 and "strategy 'full' registered twice" in clash.stderr


@pytest.mark.slow
def test_an_installed_package_entry_point_is_a_plugin_in_every_worker(tmp_path):
    package = tmp_path / "src"
    (package / "tlr_lab").mkdir(parents=True)
    (package / "tlr_lab" / "__init__.py").write_text(PLUGIN)
    (package / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "tlr-lab"
        version = "0.1"

        [project.entry-points."tl_research.plugins"]
        lab = "tlr_lab"
    '''))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--no-build-isolation", "--target", str(site), str(package)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    url = f"sqlite:///{tmp_path / 'st.db'}"
    done = _tlr("study", str(_study_yaml(tmp_path, "ep", None)), "--storage", url, "--workers", "2", env=env)
    assert done.returncode == 0, done.stderr
    trials = _completed(url, "ep")
    assert len(trials) == 2
    for t in trials:
        record = json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())
        assert record["command"][1] == "worker" and [p["name"] for p in record["plugins"]] == ["tlr_lab"]
    # without the package, a worker says which plugin the study needs
    missing = _tlr("worker", "--study", "ep", "--storage", url)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "study 'ep': its plugin: plugin 'tlr_lab' cannot be imported" in missing.stderr


def test_a_study_whose_workers_all_fail_exits_1_with_their_error(tmp_path):
    # the plugin imports in the coordinator but not in a worker (as a package missing on the workers' side)
    (tmp_path / "my_method.py").write_text(
        "import sys\nif sys.argv[1:2] == ['worker']:\n    raise ImportError('No module named lab_gpu_kit')\n"
        + PLUGIN)
    url = f"sqlite:///{tmp_path / 'st.db'}"
    done = _tlr("study", str(_study_yaml(tmp_path, "dead", ["my_method.py"])), "--storage", url, "--workers", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tlr: error: workers: 2 of 2 stopped with an error")
    assert "No module named lab_gpu_kit" in last and "2 cells still queued" in last
    study = optuna.load_study(study_name="dead", storage=open_storage(url))
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 2
