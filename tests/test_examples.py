"""examples/lab_method at smoke size: the plugin package installed (its entry point), its tuned study of the lab's
strategy + regularizer against full and lp_ft run by two workers, each arm tuned with the same budget and the
regularizer's weight tuned only where the arm has the term."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tl_research.studies.storage import open_storage

EXAMPLE = Path(__file__).parents[1] / "examples" / "lab_method"


@pytest.mark.slow
def test_the_lab_method_example_runs_end_to_end_with_two_workers(tmp_path):
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--no-build-isolation", "--target", str(site), str(EXAMPLE)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    spec = yaml.safe_load((EXAMPLE / "study.yaml").read_text())
    exp, study = spec["experiment"], spec["study"]
    exp.update(output_dir=str(tmp_path / "runs"), tracking={"mode": "disabled"})
    exp["data"].update(train_limit=48, eval_limit=24, image_size=32)
    exp["trainer"].update(max_epochs=1, patience=None, accelerator="cpu")
    study["tune"].update(trials=1, sampler="random")
    study.update(seeds=1, pruner="none")
    smoke = tmp_path / "smoke.yaml"
    smoke.write_text(yaml.safe_dump(spec))

    listed = subprocess.run([sys.executable, "-m", "tl_research.cli", "strategies"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert any(line.startswith("top_groups:") and line.endswith("[plugin lab_method]")
               for line in listed.stdout.splitlines())
    assert any(line.startswith("feature_decay:") and line.endswith("[plugin lab_method]")
               for line in listed.stdout.splitlines())

    url = f"sqlite:///{tmp_path / 'st.db'}"
    done = subprocess.run([sys.executable, "-m", "tl_research.cli", "study", str(smoke), "--storage", url,
                           "--workers", "2"], capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="lab-method", storage=open_storage(url)).get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)  # 3 arms x (1 tuning + 1 seed)
    for t in trials:
        method = json.loads(t.user_attrs["arm"]) == {"freeze.strategy": "top_groups"}
        assert ("regularize.feature_decay.weight" in t.params) == method
        assert ("train/feature_decay" in t.user_attrs) == method
        record = json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())
        assert record["command"][1] == "worker" and [p["name"] for p in record["plugins"]] == ["lab_method"]
    report = subprocess.run([sys.executable, "-m", "tl_research.cli", "report", "lab-method", "--storage", url,
                             "--out", str(tmp_path / "rep")], capture_output=True, text=True, env=env, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "top_groups" in report.stdout
