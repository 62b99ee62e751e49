"""W&B runs verified from the `.wandb` files they write (offline, no account, no network)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_experiment
from tl_research.adapters.wandb import decode, run_file
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.pipeline import run


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # wandb's own scratch files stay in the test's folder


def test_offline_fit_lands_config_history_and_summary(tmp_path, offline, capsys):
    cfg = tmp_path / "tiny.yaml"
    data = tiny_experiment(tmp_path, trainer={"max_epochs": 3}, data={"split_seed": 7})
    data["tracking"]["mode"] = "offline"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run"), "--set", "seed=5"]) == 0
    out, err = capsys.readouterr()
    assert "anonymous setting" not in out + err  # wandb's warning for an argument the run never sets
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    wandb_dir = Path(metrics["wandb_dir"])
    assert wandb_dir.is_relative_to(tmp_path / "run")  # W&B files live inside the run folder
    assert f"wandb sync {wandb_dir}" in out

    rec = decode(run_file(wandb_dir))
    # the package's public reader gives the same run (what a user reads an offline run with)
    from tl_research.runtime.tracking import read_offline_run

    public = read_offline_run(wandb_dir)
    assert public["config"] == rec["config"] and public["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
    cfg = rec["config"]
    assert re.fullmatch(r"[0-9a-f]{40}", cfg["git_sha"]) and isinstance(cfg["git_dirty"], bool)
    assert cfg["training_seed"] == 5 and cfg["data_split_seed"] == 7 and cfg["weights_source"] == "none"
    assert cfg["freeze"]["strategy"] == "full" and cfg["versions"]["torch"] and cfg["versions"]["lightning"]
    assert rec["run"].run_group == "tiny" and rec["run"].job_type == "train"
    assert set(rec["run"].tags) == {"timm/test_efficientnet", "animal-mnist", "full"}

    val = [row["val/acc"] for row in rec["history"] if "val/acc" in row]
    assert len(val) == 3 and all(0.0 <= v <= 1.0 for v in val)
    steps = [row["_step"] for row in rec["history"]]
    assert steps == sorted(steps)  # no out-of-order steps
    # the confusion matrix chart: a W&B table file of (actual, predicted, count) rows matching confusion.csv
    key = "test/confusion_matrix_table"
    [row] = [row for row in rec["history"] if f"{key}/path" in row]
    assert row[f"{key}/_type"] == "table-file" and row[f"{key}/nrows"] == 100  # every (true, predicted) pair
    table = json.loads((wandb_dir / "files" / row[f"{key}/path"]).read_text())
    counts = {(a, p): n for a, p, n in table["data"]}
    confusion = np.loadtxt(tmp_path / "run" / "confusion.csv", delimiter=",", skiprows=1, usecols=range(1, 11))
    classes = [str(i) for i in range(10)]
    assert sum(counts.values()) == confusion.sum() == metrics["data/test_size"]
    assert all(counts.get((classes[i], classes[j]), 0) == confusion[i, j] for i in range(10) for j in range(10))
    summary = rec["summary"]
    for key in ["test/acc", "throughput/train_samples_per_sec", "throughput/infer_samples_per_sec",
                "memory/peak_mb", "params/trainable", "params/total", "freeze/trainable_fraction"]:
        assert summary[key] == pytest.approx(metrics[key]), key


def test_two_runs_in_one_process_stay_apart(tmp_path, offline):
    a = run(load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 2}, tracking={"mode": "offline"})))
    b_data = tiny_experiment(tmp_path, trainer={"max_epochs": 3}, tracking={"mode": "offline"})
    b_data.update(name="other", seed=1)
    b = run(load_experiment(data=b_data))
    assert a.metrics["wandb_run_id"] != b.metrics["wandb_run_id"]
    ra, rb = decode(run_file(a.metrics["wandb_dir"])), decode(run_file(b.metrics["wandb_dir"]))
    assert [r.run_group for r in (ra["run"], rb["run"])] == ["tiny", "other"]
    assert len([r for r in ra["history"] if "val/acc" in r]) == 2
    assert len([r for r in rb["history"] if "val/acc" in r]) == 3
    assert ra["config"]["training_seed"] == 0 and rb["config"]["training_seed"] == 1
    assert ra["summary"]["test/acc"] == pytest.approx(a.metrics["test/acc"])
    assert rb["summary"]["test/acc"] == pytest.approx(b.metrics["test/acc"])


def test_disabled_writes_no_wandb_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    result = run(load_experiment(data=tiny_experiment(tmp_path, tracking={"mode": "offline"})))
    assert "wandb_dir" not in result.metrics and not list(result.run_dir.rglob("*.wandb"))


def test_online_without_credentials_or_network_fails_fast(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, tracking={"mode": "online"})))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["fit", str(cfg)]) == 2
    assert "online needs W&B credentials" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1:9 cannot be reached" in err[0]
    assert not (tmp_path / "runs").exists()


def test_a_resumed_run_continues_its_wandb_run(tmp_path, offline):
    """Killed after its first epoch, then resumed with the same command: one W&B run id across both."""
    import lightning.pytorch as L

    class Kill(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise RuntimeError("killed")

    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 3}, tracking={"mode": "offline"}))
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed"):
        run(exp, out, callbacks=[Kill()])
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "metrics.json").exists()
    metrics = run(exp, out).metrics
    files = sorted((out / "wandb").glob("offline-run-*/*.wandb"))
    assert len(files) == 2  # one file per attempt …
    ids = {decode(f)["run"].run_id for f in files}
    assert ids == {metrics["wandb_run_id"]}  # … of one W&B run
    resumed = decode(files[-1])
    assert resumed["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
    epochs = [row["epoch"] for row in resumed["history"] if "epoch" in row]
    assert epochs and min(epochs) >= 1  # it went on from epoch 1: epoch 0 was not trained again


def test_study_run_names_carry_the_cell(tmp_path, offline):
    study = tmp_path / "s.yaml"
    exp = tiny_experiment(tmp_path, trainer={"max_epochs": 1}, tracking={"mode": "offline"})
    study.write_text(yaml.safe_dump({"experiment": exp, "study": {"name": "names", "kind": "grid",
                                                                  "grid": {"freeze.strategy": ["linear_probe"]}}}))
    assert main(["study", str(study), "--storage", f"sqlite:///{tmp_path / 'st.db'}"]) == 0
    (wandb_file,) = (tmp_path / "runs" / "studies" / "names").glob("trial-*/wandb/offline-run-*/*.wandb")
    assert decode(wandb_file)["run"].display_name == "tiny[strategy=linear_probe,seed=0]"  # each value once


def test_a_tuned_studys_runs_carry_phase_and_arm(tmp_path, offline, capsys):
    import optuna

    from tl_research.studies.storage import open_storage

    study = tmp_path / "s.yaml"
    exp = tiny_experiment(tmp_path, trainer={"max_epochs": 1}, tracking={"mode": "offline"})
    study.write_text(yaml.safe_dump({"experiment": exp, "study": {
        "name": "arms", "kind": "tuned", "arms": {"freeze.strategy": ["full", "linear_probe"]}, "seeds": 1,
        "tune": {"params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, "trials": 1},
        "pruner": "none"}}))
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(study), "--storage", url]) == 0
    trials = optuna.load_study(study_name="arms", storage=open_storage(url)).get_trials()
    assert sorted(t.user_attrs["phase"] for t in trials) == ["seed", "seed", "tune", "tune"]
    # one command lists (or syncs) the whole study's W&B runs, read from the storage
    capsys.readouterr()
    assert main(["sync", "arms", "--storage", url, "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert sorted(listed) == sorted(t.user_attrs["wandb_dir"] for t in trials)
    assert all(Path(d, run_file(d).name).is_file() for d in listed)
    for t in trials:
        rec = decode(run_file(Path(t.user_attrs["run_dir"]) / "wandb" / Path(t.user_attrs["wandb_dir"]).name))
        phase, arm = t.user_attrs["phase"], json.loads(t.user_attrs["arm"])
        assert rec["run"].job_type == phase and phase in rec["run"].tags
        assert rec["config"]["phase"] == phase and rec["config"]["arm"] == arm
        name = rec["run"].display_name
        assert name.startswith(f"tiny[strategy={arm['freeze.strategy']},") and name.count("lr=") == 1, name
        assert ("seed=" in name) == (phase == "seed"), name  # a tuning trial runs no seed of its own


def test_log_model_records_checkpoint_artifacts(tmp_path, offline):
    from tl_research.adapters.wandb import read_records

    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 2},
                                               tracking={"mode": "offline", "log_model": "all"}))
    m = run(exp, tmp_path / "run").metrics
    records = read_records(run_file(m["wandb_dir"]))
    # (the confusion-matrix chart is an artifact too, of type run_table)
    artifacts = [r.artifact for r in records
                 if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"]
    assert artifacts
    assert any(json.loads(a.metadata).get("score") is not None for a in artifacts)  # logged with its val/acc
    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 2}, tracking={"mode": "offline"}))
    m = run(exp, tmp_path / "plain").metrics
    assert not [r for r in read_records(run_file(m["wandb_dir"]))
                if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"]


def test_reading_something_that_is_no_wandb_run_is_one_line(tmp_path):
    from tl_research.errors import UserError
    from tl_research.runtime.tracking import read_offline_run

    with pytest.raises(UserError, match=r"cannot read the W&B run \(.*expected one W&B run file"):
        read_offline_run(tmp_path)
    (tmp_path / "run-x.wandb").write_bytes(b"not a run")
    with pytest.raises(UserError, match="is not a W&B run file"):
        read_offline_run(tmp_path)

