"""Malformed input (one line, exit 2, the key named, nothing written) and injected faults (damaged checkpoint,
full disk, damaged storage, diverging loss, hostile data files)."""

import errno
import gzip
import json
import os
import pickle

import numpy as np
import optuna
import pytest
import torch
import yaml

from tests.conftest import tiny_experiment
from tl_research.cli.main import main


def _one_line(capsys, message):
    """One error line, naming the problem, and no traceback (a run that had started may have logged before)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tlr: error:")]
    assert len(errors) == 1 and message in errors[0] and err.rstrip().endswith(errors[0]), err
    assert "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def exp_file(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    return path


FIT_SETS = [
    ("seed=-1", "seed: -1 is out of range"),
    ("seed=4294967296", "seed: 4294967296 is out of range"),
    ("seed=true", "seed: expected an integer"),
    ("data.split_seed=-1", "data.split_seed: -1 is out of range"),
    ("data.subset_seed=-5", "data.subset_seed: -5 is out of range"),
    ("optim.lr=inf", "optim.lr: inf is not a finite number"),
    ("optim.lr=.nan", "optim.lr: nan is not a finite number"),
    ("optim.lr=0", "optim.lr: 0.0 is out of range"),
    ("optim.lr=abc", "optim.lr: expected a number"),
    ("optim.weight_decay=-1", "optim.weight_decay: -1.0 is out of range"),
    ("optim.schedule=linear", "optim.schedule: 'linear' is not allowed"),
    ("optim.label_smoothing=1", "optim.label_smoothing: 1.0 is out of range"),
    ("optim.name=lion", "optim.name: 'lion' is not allowed"),
    ("trainer.accelerator=gpu", "trainer.accelerator: gpu requested but no CUDA device"),
    ("trainer.accelerator=tpu", "trainer.accelerator: 'tpu' is not allowed"),
    ("trainer.max_epochs=0", "trainer.max_epochs: 0 is out of range"),
    ("trainer.devices=0", "trainer.devices: 0 is out of range"),
    ("trainer.precision=8-bit", "trainer.precision: '8-bit' is not allowed"),
    ("trainer.patience=0", "trainer.patience: 0 is out of range"),
    ("freeze.strategy=nope", "freeze.strategy"),
    ("freeze.colour=1", "freeze.colour: unknown key"),
    ("freeze.bn=melt", "freeze.bn: 'melt' is not allowed"),
    ("data.name=nosuch", "data.name"),
    ("data.shots=0", "data.shots: 0 is out of range"),
    ("data.fraction=1.5", "data.fraction: 1.5 is out of range"),
    ("data.val_fraction=1", "data.val_fraction: 1.0 is out of range"),
    ("data.image_size=4", "data.image_size: 4 is out of range"),
    ("data.batch_size=0", "data.batch_size: 0 is out of range"),
    ("data.train_limit=0", "data.train_limit: 0 is out of range"),
    ("data.augment.zoom=2", "data.augment.zoom: 2.0 is out of range"),
    ("data.augment.blur=1", "data.augment.blur: unknown key"),
    ("data.classes=[x,y]", "data.classes: 'x' is not a class of animal-mnist"),
    ("data.eval_shifts=[fog]", "data.eval_shifts[0]: unknown shift 'fog'"),
    ("data.shift=fog:2", "data.shift: unknown shift 'fog:2'"),
    ("data.shift=blur:0", "data.shift: severity 0 is out of range"),
    ("backbone.name=timm/nosuchnet", "backbone.name: unknown timm model"),
    ("backbone.name=noslash", "backbone.name: 'noslash' must look like"),
    ("backbone.weights=/nonexistent/w.pth", "backbone.weights: '/nonexistent/w.pth' is not none, hub, offline"),
    ("backbone.layers=weird", "backbone.layers: 'weird' is not allowed"),
    ("backbone.max_length=4", "backbone.max_length: 4 is out of range"),
    ("head.type=cnn", "head.type: 'cnn' is not allowed"),
    ("head.dropout=1", "head.dropout: 1.0 is out of range"),
    ("cache.mode=sometimes", "cache.mode: 'sometimes' is not allowed"),
    ("tracking.mode=loud", "tracking.mode: 'loud' is not allowed"),
    ("foo=1", "foo: unknown key"),
    ("backbone=3", "backbone: expected a mapping"),
    ("nokey", "--set 'nokey': expected key=value"),
]


@pytest.mark.parametrize("setting, message", FIT_SETS)
def test_fit_bad_setting(tmp_path, exp_file, capsys, setting, message):
    assert main(["fit", str(exp_file), "--set", setting, "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, message)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()  # nothing written


def test_fit_bad_strategy_options(tmp_path, capsys):
    cases = [({"freeze": {"strategy": "depth", "depth": 999}}, "freeze.depth: 999 is more than"),
             ({"freeze": {"strategy": "lp_ft", "ft_depth": 99}}, "freeze.ft_depth: 99 is more than"),
             ({"freeze": {"strategy": "surgical"}}, "freeze.group: strategy surgical needs"),
             ({"data": {"name": "digits", "root": str(tmp_path), "image_size": 32}}, "data.root: digits ships inside")]
    for sections, message in cases:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, **sections)))
        assert main(["fit", str(cfg)]) == 2
        _one_line(capsys, message)


@pytest.mark.parametrize("text, message", [
    ("name: a\nseed: 1\nseed: 2\n", "key 'seed' appears twice in one mapping (line 3)"),
    ("name: a\nfreeze:\n  strategy: full\n  strategy: depth\n", "key 'strategy' appears twice"),
    ("name: [unclosed\n", "not valid YAML at line"),
    ("- a\n- b\n", "expected a mapping of config keys"),
])
def test_fit_bad_yaml(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["fit", str(cfg)]) == 2
    _one_line(capsys, message)


def test_fit_missing_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "none.yaml")]) == 2
    _one_line(capsys, "cannot read config")


def test_out_folder_with_other_files_is_refused(tmp_path, exp_file, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["fit", str(exp_file), "--out", str(out)]) == 2
    _one_line(capsys, "is not empty and holds no run of this experiment")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def _study(tmp_path, study, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"experiment": tiny_experiment(tmp_path),
                                    "study": {"name": "h", "kind": "grid", "grid": {"optim.lr": [0.01]}, **study}}))
    return path


LR = {"type": "float", "low": 1e-4, "high": 1e-2}
STUDIES = [
    ({"grid": {"optim.lr": []}}, "study.grid.optim.lr: expected a non-empty list"),
    ({"grid": [1, 2]}, "study.grid: expected a mapping of config keys to lists of values"),
    ({"seeds": 0}, "study.seeds: expected a count >= 1"),
    ({"seeds": [-1]}, "study.seeds: expected a count >= 1"),
    ({"grid": {"seed": [0, 1]}, "seeds": 3}, "study.grid.seed: give the seeds either"),
    ({"kind": "search", "params": {"optim.lr": {**LR, "lgo": True}}}, "study.params.optim.lr.lgo: unknown key"),
    ({"kind": "search", "params": {"optim.lr": {**LR, "high": "abc"}}},
     "study.params.optim.lr.high: expected a number"),
    ({"kind": "search", "params": {"optim.lr": {"type": "float", "high": 1}}}, "study.params.optim.lr.low: missing"),
    ({"kind": "search", "params": {"optim.lr": {"type": "float", "low": 1, "high": 0.1}}}, "needs low <= high"),
    ({"kind": "search", "params": {"optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
     "a log-scale range needs low > 0"),
    ({"kind": "search", "params": {"optim.lr": {"type": "normal"}}},
     "study.params.optim.lr.type: 'normal' is not allowed (allowed: float, int, categorical)"),
    ({"kind": "search", "params": {"optim.lr": {"type": "categorical", "choices": []}}},
     "study.params.optim.lr.choices: expected a list or null, got []"),
    ({"kind": "search", "params": {"optim.lr": {"type": "categorical", "choices": [0.1], "low": 0}}},
     "a categorical takes only `choices`"),
    ({"kind": "search", "params": {"optim.lr": {**LR, "choices": [0.1]}}}, "only a categorical takes choices"),
    ({"kind": "search", "params": {"freeze.depth": {"type": "int", "low": "abc"}}},
     "study.params.freeze.depth.low: expected a number"),
    ({"kind": "search", "params": {"optim.lr": 0.1}}, "study.params.optim.lr: expected a mapping of keys"),
    ({"kind": "search", "params": {"optim.lr": LR}, "timeout": 0}, "study.timeout: 0.0 is out of range"),
    ({"kind": "search", "params": {"optim.lr": LR}, "n_trials": 0}, "study.n_trials: 0 is out of range"),
    ({"heartbeat_interval": 0}, "study.heartbeat_interval: 0 is out of range"),
    ({"grace_period": -1}, "study.grace_period: -1 is out of range"),
    ({"kind": "magic"}, "study.kind: 'magic' is not allowed"),
    ({"pruner": "always"}, "study.pruner: 'always' is not allowed"),
    ({"colour": 1}, "study.colour: unknown key"),
    ({"grid": {"optim.lr": [-1]}}, "study.grid.optim.lr: optim.lr: -1.0 is out of range"),
    ({"grid": {"seed": [-3]}}, "study.grid.seed: seed: -3 is out of range"),
]


@pytest.mark.parametrize("study, message", STUDIES)
def test_study_bad_input_leaves_storage_untouched(tmp_path, capsys, study, message):
    db = tmp_path / "st.db"
    assert main(["study", str(_study(tmp_path, study)), "--storage", f"sqlite:///{db}"]) == 2
    _one_line(capsys, message)
    assert not db.exists()


def test_study_bad_cli_input(tmp_path, capsys):
    db = tmp_path / "st.db"
    cfg = _study(tmp_path, {})
    assert main(["study", str(cfg), "--storage", f"sqlite:///{db}", "--workers", "0"]) == 2
    _one_line(capsys, "argument --workers: 0 is below 1")
    raw = tmp_path / "raw.yaml"
    raw.write_text(yaml.safe_dump({"study": {"name": "x"}}))
    assert main(["study", str(raw), "--storage", f"sqlite:///{db}"]) == 2
    _one_line(capsys, "experiment: a study needs its base experiment")
    raw.write_text(yaml.safe_dump({"experiment": tiny_experiment(tmp_path), "study": {}, "extra": 1}))
    assert main(["study", str(raw), "--storage", f"sqlite:///{db}"]) == 2
    _one_line(capsys, "extra: unknown key")
    assert not db.exists()


def test_readers_never_create_a_storage(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    claims = tmp_path / "c.yaml"
    claims.write_text(yaml.safe_dump({"claims": [{"id": "a", "relation": ">", "a": {}, "b": {}}]}))
    for args in (["report", "x", "--storage", f"sqlite:///{missing}"],
                 ["worker", "--study", "x", "--storage", f"sqlite:///{missing}"],
                 ["check", "x", str(claims), "--storage", f"sqlite:///{missing}"],
                 ["report", "x", "--storage", str(tmp_path / "missing.log")]):
        assert main(args) == 2
        _one_line(capsys, "--storage: no study storage at")
    assert not missing.exists() and not (tmp_path / "missing.log").exists()


def test_report_names_its_argument(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'st.db'}"
    optuna.create_study(study_name="other", storage=url)
    assert main(["report", "nosuch", "--storage", url]) == 2
    _one_line(capsys, "name: no study 'nosuch' in this storage (studies: other)")
    assert main(["worker", "--study", "nosuch", "--storage", url]) == 2
    _one_line(capsys, "--study: no study 'nosuch'")


def test_storage_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TLR_STORAGE", raising=False)
    assert main(["worker", "--study", "x"]) == 2  # no storage named anywhere
    _one_line(capsys, "--storage: which storage holds study 'x'? (--storage URL or $TLR_STORAGE)")
    url = f"sqlite:///{tmp_path / 'st.db'}"
    optuna.create_study(study_name="other", storage=url)
    monkeypatch.setenv("TLR_STORAGE", url)  # stands in for --storage in every command that reads a storage
    assert main(["report", "nosuch"]) == 2
    _one_line(capsys, "name: no study 'nosuch' in this storage (studies: other)")
    assert main(["worker", "--study", "nosuch"]) == 2
    _one_line(capsys, "--study: no study 'nosuch'")


def test_damaged_storage_is_one_line(tmp_path, capsys):
    db = tmp_path / "st.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    for args in (["report", "x", "--storage", f"sqlite:///{db}"],
                 ["study", str(_study(tmp_path, {})), "--storage", f"sqlite:///{db}"]):
        assert main(args) == 2
        err = _one_line(capsys, f"--storage: the storage at sqlite:///{db} is damaged")
        assert err.count("(") == err.count(")"), err  # the driver's "(sqlite3.DatabaseError) …" prefix reworded


def test_passwords_are_masked(tmp_path, capsys):
    from tl_research.redact import mask_url

    assert mask_url("postgresql+psycopg://alice:s3cret@db:5432/st") == "postgresql+psycopg://alice:***@db:5432/st"
    assert main(["study", str(_study(tmp_path, {})), "--storage",
                 "postgresql+psycopg://alice:s3cret@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "alice:***@" in err
    cfg = _study(tmp_path, {"storage": "postgresql+psycopg://alice:s3cret@127.0.0.1:1/none"})
    from tl_research.studies.studyspec import load_study

    assert "s3cret" not in str(load_study(cfg).to_json())


# ------------------------------------------------------------------ faults


def test_damaged_checkpoint_is_refused_then_restarted(tmp_path, exp_file, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(exp_file), "--out", str(out)]) == 0
    (out / "metrics.json").unlink()  # as if killed after its last epoch
    (out / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    assert main(["fit", str(exp_file), "--out", str(out)]) == 2
    _one_line(capsys, "last.ckpt is damaged (unreadable); rerun with --restart")
    assert main(["fit", str(exp_file), "--out", str(out), "--restart"]) == 0
    assert (out / "metrics.json").exists() and list((out / "checkpoints").glob("last.ckpt.damaged-*"))
    # one best model: the new attempt's best.ckpt, the old attempt's aside (no best-v1.ckpt beside a stale one)
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert list((out / "checkpoints").glob("best.ckpt.old-*"))
    # and what readers load is the model the run reports: its predictions on the test split are the run's own
    from tl_research.data.registry import load_dataset
    from tl_research.lifecycle.inference import load_run, predict

    raw = load_dataset("animal-mnist")
    with np.load(out / "predictions.npz") as z:
        inputs, probs = [raw.inputs[int(i)] for i in z["index"]], z["prob"]
    assert np.allclose(predict(load_run(out), inputs)[0], probs, atol=1e-5)
    # an export and `backbone.weights: <run>` hold that model too
    assert main(["export", str(out), "--format", "safetensors", "--out", str(tmp_path / "exported")]) == 0
    assert np.allclose(predict(load_run(tmp_path / "exported"), inputs)[0], probs, atol=1e-5)
    from tl_research.backbones.from_run import run_backbone_state

    tensors, _ = run_backbone_state(str(out), "timm/test_efficientnet")
    served = load_run(out).model.backbone.model.state_dict()
    assert tensors.keys() == served.keys() and all(torch.equal(tensors[k], served[k]) for k in tensors)


def test_full_disk_is_one_line_and_leaves_no_finished_run(tmp_path, exp_file, capsys, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    real = TorchCheckpointIO.save_checkpoint
    calls = []

    def full(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) > 1:  # the first checkpoint fits, the disk fills up on the second
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    out = tmp_path / "run"
    assert main(["fit", str(exp_file), "--out", str(out)]) == 2
    _one_line(capsys, "no space left on the device while writing the run in")
    assert not (out / "metrics.json").exists()
    assert not list((out / "checkpoints").glob("*.tmp"))  # the half-written file is gone
    for ckpt in (out / "checkpoints").glob("*.ckpt"):  # what is left is a whole checkpoint
        import torch

        torch.load(ckpt, weights_only=True)


def test_diverging_run_stops_with_the_loss(tmp_path, capsys):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, optim={"lr": 1e30, "name": "sgd", "momentum": 0.0})))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, "training diverged: the training loss became")
    assert not (tmp_path / "run" / "metrics.json").exists()
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"experiment": yaml.safe_load(cfg.read_text()),
                                     "study": {"name": "div", "kind": "grid", "grid": {"seed": [0, 1]}}}))
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(study), "--storage", url]) == 1  # every trial failed
    out = capsys.readouterr().out
    assert "2 trial(s) failed" in out and "training diverged" in out
    trials = optuna.load_study(study_name="div", storage=url).trials
    seeds = {(t.params or t.system_attrs["fixed_params"])["seed"] for t in trials}
    assert seeds == {0, 1}  # the seed axis gave one trial per seed
    assert all("the training loss became" in t.user_attrs["error"] for t in trials)


def test_split_that_leaves_a_part_empty(tmp_path, capsys):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    cfg = tmp_path / "f.yaml"
    data = {"name": "image_folder", "root": str(tmp_path / "imgs"), "train_limit": None, "eval_limit": None}
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data=data)))
    assert main(["fit", str(cfg)]) == 2
    _one_line(capsys, "data: imgs splits into")


def test_npz_with_nan_is_refused(tmp_path, capsys):
    x = np.random.default_rng(0).random((20, 8, 8)).astype(np.float32)
    x[3, 2, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2)
    cfg = tmp_path / "n.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={"name": "npz", "root": str(tmp_path / "d.npz")})))
    assert main(["fit", str(cfg)]) == 2
    _one_line(capsys, "d.npz:x holds 1 NaN/inf values")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_executes_nothing(tmp_path, capsys):
    """animal-mnist's files are pickles: from a user's data.root only numpy arrays are admitted."""
    marker = tmp_path / "pwned"
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(tmp_path / name, "wb") as f:
            pickle.dump(_Exploit(marker), f)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={"root": str(tmp_path)})))
    assert main(["fit", str(cfg)]) == 2
    _one_line(capsys, "refused to load posix.system")
    assert not marker.exists()


def test_peak_memory_is_per_run():
    """A study worker's later runs must not inherit an earlier run's peak (Linux resets VmHWM)."""
    from tl_research.training.callbacks import peak_memory_mb, reset_peak_memory

    cpu = __import__("torch").device("cpu")
    big = np.ones(300 * 2**20 // 8)  # 300 MB
    del big
    before = peak_memory_mb(cpu)
    reset_peak_memory(cpu)
    after = peak_memory_mb(cpu)
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("not Linux: the figure is the process peak there")
    assert after < before - 200


def test_sigterm_stops_a_fit_that_then_resumes(tmp_path):
    """SIGTERM mid-fit: exit 143 with one line, the run left unfinished and resumable; the same command finishes
    it from the last epoch (before, Lightning's handler turned the signal into a silent exit 0 at the next batch)."""
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, trainer={"max_epochs": 5}, data={"train_limit": 160})))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tl_research.cli", "fit", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (out / "checkpoints" / "last.ckpt").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.rstrip().endswith("tlr: terminated"), err[-2000:]
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "metrics.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # the same command resumes
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 5


def test_a_finite_but_exploding_loss_is_divergence_too(tmp_path, capsys):
    """SGD at lr 20: the loss stays finite but runs far above where it started; the run stops as diverged instead
    of finishing at chance accuracy with a normal exit (and adam at lr 1000, NaN on validation, too)."""
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, optim={"lr": 20.0, "name": "sgd", "momentum": 0.0})))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, "training diverged: the training loss grew from")
    assert not (tmp_path / "run" / "metrics.json").exists()
    # off on request: the same run finishes (what it learns is then the user's to judge)
    assert main(["fit", str(cfg), "--out", str(tmp_path / "off"), "--set", "trainer.divergence_factor=null"]) == 0
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, optim={"lr": 1000.0})))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "adam")]) == 2
    _one_line(capsys, "training diverged: the ")


def test_damage_in_the_middle_of_a_storage_is_one_line(tmp_path, capsys):
    """8 KiB of garbage in the middle of a study's SQLite file: the header still opens, the reads fail; every
    reader says the storage is damaged in one line (no traceback)."""
    from tests.conftest import grid_study

    strategies, shots = ["linear_probe", "full"], [1, 2, 4, 8, 16, 32]
    accs = {(s, n, seed): 0.5 for s in strategies for n in shots for seed in range(10)}
    url = grid_study(tmp_path, "dmg", strategies, shots, list(range(10)), accs)
    db = tmp_path / "st.db"
    data = bytearray(db.read_bytes())
    at = len(data) // 4 // 4096 * 4096  # data pages: the schema still reads, the trials do not
    data[at:at + 8192] = os.urandom(8192)
    db.write_bytes(bytes(data))
    for args in (["report", "dmg", "--storage", url], ["worker", "--study", "dmg", "--storage", url]):
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert err.startswith(f"tlr: error: --storage: the storage at {url} is damaged") and err.count("\n") == 1, err


@pytest.mark.parametrize("module, argv, message", [
    ("datasets", ["fit", "{exp}"], "data.name: hf needs the package datasets, which is not installed: pip install "
                                   "'tl_research[hf]' (or: pip install datasets)"),
    ("psycopg", ["report", "s", "--storage", "postgresql+psycopg://u@localhost:1/db"],
     "--storage postgresql+psycopg://… needs the package psycopg, which is not installed: pip install "
     "'tl_research[postgres]' (or: pip install psycopg)"),
])
def test_a_missing_optional_dependency_is_one_line_naming_its_extra(tmp_path, module, argv, message):
    """As on an installation without the extra: the module cannot be imported (None in sys.modules)."""
    import subprocess
    import sys

    exp = tmp_path / "hf.yaml"
    exp.write_text(yaml.safe_dump(tiny_experiment(tmp_path, data={"name": "hf", "path": str(tmp_path)})))
    code = (f"import sys\nsys.modules[{module!r}] = None\nfrom tl_research.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, *[a.format(exp=exp) for a in argv]], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip() == f"tlr: error: {message}", done.stderr[-1500:]
