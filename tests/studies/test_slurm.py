"""Studies on a real Slurm (the one-node cluster `.ci/slurm.sh` starts) with a live PostgreSQL storage: `tlr study
--launcher slurm` submits a worker array that completes every cell exactly once; a worker task preempted by
`scancel --signal=TERM` hands its cell back and requeues itself, and the requeued task resumes the cell from its
last checkpoint (the epoch it went on from is recorded); a task at its time limit (SIGUSR1 ahead of it) does the
same; bad launcher input is one line."""

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tl_research.cli.main import main
from tl_research.studies.storage import open_storage

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def _study(tmp_path: Path, name: str, lrs: list[float], seeds: int, epochs: int) -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "experiment": {"name": name, "output_dir": str(tmp_path / "runs"), "tracking": {"mode": "disabled"},
                       "backbone": {"name": "timm/test_efficientnet", "weights": "none"},
                       "freeze": {"strategy": "full"},
                       "data": {"name": "digits", "train_limit": 64, "eval_limit": 40, "image_size": 32,
                                "batch_size": 16},
                       "optim": {"lr": 0.01},
                       "trainer": {"max_epochs": epochs, "patience": None, "accelerator": "cpu"}},
        "study": {"name": name, "kind": "grid", "grid": {"optim.lr": lrs}, "seeds": seeds,
                  "heartbeat_interval": 2, "grace_period": 600}}))
    return cfg


def _submit(cfg: Path, url: str, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tl_research.cli", "study", str(cfg), "--storage", url, "--launcher",
                          "slurm", *extra], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split("Slurm job ")[1].split()[0]


def _tasks(job: str) -> list[tuple[str, str]]:
    """(task id, state) of the job's tasks still in the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def _wait(job: str, until, timeout: float = 420) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if until():
            return
        # a requeued task waits ~2 minutes before it may start again (Slurm's guard against requeue loops)
        for task, state in _tasks(job):
            if state == "PENDING":
                subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], capture_output=True)
        time.sleep(2)
    subprocess.run(["scancel", job])
    pytest.fail(f"Slurm job {job} did not get there in {timeout} s: {_tasks(job)}")


def _done(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).trials


def _exactly_once(trials: list, cells: set) -> list:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert Counter((t.params["optim.lr"], t.params["seed"]) for t in done) == Counter(dict.fromkeys(cells, 1))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return done


def test_a_worker_array_completes_every_cell_once(tmp_path, postgres_url):
    name = f"sl-{uuid.uuid4().hex[:8]}"
    cfg = _study(tmp_path, name, [0.01, 0.02, 0.05], 2, 2)
    job = _submit(cfg, postgres_url, "--workers", "2", "--slurm-cpus-per-worker", "1")
    _wait(job, lambda: not _tasks(job))
    trials = _done(postgres_url, name)
    _exactly_once(trials, {(lr, s) for lr in (0.01, 0.02, 0.05) for s in (0, 1)})
    assert not [t for t in trials if t.state == TrialState.FAIL]
    logs = sorted((tmp_path / "runs" / "studies" / name / "slurm").glob(f"worker-{job}_*.out"))
    assert len(logs) == 2 and all("worker done" in p.read_text() for p in logs)
    script = (tmp_path / "runs" / "studies" / name / "slurm" / "workers.sbatch").read_text()
    assert "#SBATCH --array=0-1" in script and "--signal=B:USR1@90" in script and "--requeue" in script
    assert "tlrpw" not in script  # the storage password stays out of the script (it travels in the environment)


def _last_checkpoint(tmp_path: Path, name: str, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list((tmp_path / "runs" / "studies" / name).glob("trial-*/checkpoints/last.ckpt"))
        if found:
            return found[0].parent.parent
        time.sleep(0.5)
    pytest.fail("no trial wrote a last checkpoint")


def _resumed(trials: list, folder: Path) -> dict:
    """The cell interrupted in `folder` failed once as interrupted and completed once in the same folder, resumed
    from a saved epoch; returns its metrics."""
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs.get("error") for t in stopped] == ["interrupted"] * len(stopped) and stopped
    done = [t for t in trials if t.state == TrialState.COMPLETE and Path(t.user_attrs["run_dir"]) == folder.resolve()]
    assert len(done) == 1
    metrics = json.loads((folder / "metrics.json").read_text())
    # only a resumed run records the epoch its last checkpoint held: it went on from there, not from scratch
    assert 0 <= metrics["resumed_from_epoch"] < metrics["epochs"]
    return metrics


def test_a_preempted_task_is_requeued_and_its_cell_resumes_from_its_checkpoint(tmp_path, postgres_url):
    name = f"sp-{uuid.uuid4().hex[:8]}"
    cfg = _study(tmp_path, name, [0.01], 1, 12)
    job = _submit(cfg, postgres_url, "--workers", "1")
    folder = _last_checkpoint(tmp_path, name)
    subprocess.run(["scancel", "--batch", "--signal=TERM", f"{job}_0"], check=True)
    _wait(job, lambda: not _tasks(job))
    trials = _done(postgres_url, name)
    _exactly_once(trials, {(0.01, 0)})
    _resumed(trials, folder)
    log = next((tmp_path / "runs" / "studies" / name / "slurm").glob(f"worker-{job}_0.out")).read_text()
    assert "requeued" in log and "worker done" in log


def test_a_task_at_its_time_limit_hands_its_cell_back_and_resumes(tmp_path, postgres_url):
    """`--slurm-time=3`: Slurm sends SIGUSR1 90 s ahead of the limit (about 90 s in); the cell needs longer. (At 2
    minutes the warning came 30 s in, before a loaded machine had finished the cell's first epoch.)"""
    name = f"st-{uuid.uuid4().hex[:8]}"
    cfg = _study(tmp_path, name, [0.01], 1, 2000)
    job = _submit(cfg, postgres_url, "--workers", "1", "--slurm-time", "3")
    folder = _last_checkpoint(tmp_path, name)
    _wait(job, lambda: any(t.state == TrialState.FAIL for t in _done(postgres_url, name)), timeout=240)
    subprocess.run(["scancel", job])  # the cell was handed back at the warning: enough shown, stop the array
    trials = _done(postgres_url, name)
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped[0].user_attrs["error"] == "interrupted" and Path(stopped[0].user_attrs["run_dir"]) == folder
    retry = [t for t in trials if t.number > stopped[0].number]
    assert retry and retry[0].user_attrs["run_dir"] == stopped[0].user_attrs["run_dir"]  # it resumes there


@pytest.mark.parametrize("extra, message", [
    (["--storage", "sqlite:///{tmp}/s.db"], "--storage: sqlite:///"),
    (["--storage", "{pg}", "--slurm-time", "1:00:00"], None),
])
def test_launcher_input(tmp_path, postgres_url, capsys, extra, message):
    cfg = _study(tmp_path, f"sb-{uuid.uuid4().hex[:8]}", [0.01], 1, 1)
    args = [a.format(tmp=tmp_path, pg=postgres_url) for a in extra]
    if message is None:  # a search cannot be launched as an array
        data = yaml.safe_load(cfg.read_text())
        data["study"] = {"name": "sb-search", "kind": "search", "n_trials": 2,
                         "params": {"optim.lr": {"type": "float", "low": 0.001, "high": 0.1}}}
        cfg.write_text(yaml.safe_dump(data))
        message = "--launcher: slurm runs grid studies (this one is search"
    assert main(["study", str(cfg), "--launcher", "slurm", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_srun_ddp_tasks_write_one_run_folder_and_one_wandb_run(tmp_path):
    """Two DDP processes started by `srun` (Lightning's Slurm environment: ranks from SLURM_PROCID) train one run:
    one folder, one W&B run, rank 0 alone writes."""
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "ddp", "output_dir": str(tmp_path / "runs"), "tracking": {"mode": "offline"},
        "backbone": {"name": "timm/test_efficientnet", "weights": "none"}, "freeze": {"strategy": "full"},
        "data": {"name": "digits", "train_limit": 64, "eval_limit": 40, "image_size": 32, "batch_size": 16},
        "trainer": {"max_epochs": 2, "patience": None, "accelerator": "cpu", "devices": 2}}))
    out = subprocess.run(["srun", "-N", "1", "--ntasks-per-node=2", "-c", "1", "--job-name=tlr-ddp", sys.executable,
                          "-m", "tl_research.cli", "fit", str(cfg), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stderr + out.stdout  # two processes joined one process group
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/test_size"] == 40 and metrics["epochs"] == 2
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1
    assert not (tmp_path / "runs").exists()  # no rank chose a folder of its own
    bare = subprocess.run(["srun", "-N", "1", "--ntasks-per-node=2", "-c", "1", "--job-name=tlr-ddp", sys.executable,
                           "-m", "tl_research.cli", "fit", str(cfg)], capture_output=True, text=True, timeout=300)
    assert bare.returncode == 2 and "--out: DDP tasks started by srun" in bare.stderr
