"""Tuned studies: every arm tuned on validation with the same budget, its best setting re-run with seeds and tested
(tiny random-weight twin, real SQLite / journal storages, real Lightning runs)."""

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.studies.test_study import _write, kill_mid_trial
from tl_research.adapters import optuna as optuna_adapter
from tl_research.cli.main import main
from tl_research.studies import tuned
from tl_research.studies.storage import open_storage

LR = {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True}


def _tuned(name, sampler="tpe", trials=3):
    return {"name": name, "kind": "tuned", "arms": {"freeze.strategy": ["full", "lp_ft"]},
            "tune": {"params": {"optim.lr": LR, "freeze.ft_lr": LR}, "trials": trials, "sampler": sampler},
            "seeds": 2, "pruner": "none"}  # 1-epoch trials: nothing to prune, and no order-dependent pruning


def _check_protocol(url, name, killed=0):
    """The protocol on the stored trials (`killed`: trials failed by a killed worker, each retried as a new one)."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = study.get_trials()
    assert sum(t.state == TrialState.FAIL for t in trials) == killed
    trials = [t for t in trials if t.state != TrialState.FAIL]
    tuning = [t for t in trials if t.user_attrs.get("phase") == "tune"]
    seeds = [t for t in trials if t.user_attrs.get("phase") == "seed"]
    # the same budget per arm; freeze.ft_lr is tuned only where it applies (lp_ft), never for full
    for arm in ({"freeze.strategy": "full"}, {"freeze.strategy": "lp_ft"}):
        mine = [t for t in tuning if json.loads(t.user_attrs["arm"]) == arm]
        assert len(mine) == 3 and all(t.state == TrialState.COMPLETE for t in mine)
        assert all(("freeze.ft_lr" in t.params) == (arm["freeze.strategy"] == "lp_ft") for t in mine)
        # validation only: no tuning trial holds a test metric or left test predictions
        assert not any(k.startswith("test") for t in mine for k in t.user_attrs)
        assert not any(Path(t.user_attrs["run_dir"], "predictions.npz").exists() for t in mine)
        best = max(mine, key=lambda t: (t.value, -t.number))
        runs = [t for t in seeds if json.loads(t.user_attrs["arm"]) == arm]
        assert sorted(t.params["seed"] for t in runs) == [0, 1]
        for t in runs:  # each seed run uses exactly the arm's best tuning setting, and is tested
            assert t.params["optim.lr"] == best.params["optim.lr"] and t.user_attrs["tuned_from"] == best.number
            assert t.params.get("freeze.ft_lr") == best.params.get("freeze.ft_lr")
            assert "test/acc" in t.user_attrs and t.state == TrialState.COMPLETE
    assert len(trials) == 10  # 2 arms x (3 tuning trials + 2 seed runs)
    return study


def test_a_tuned_study_end_to_end_with_its_report_and_claims(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'st.db'}"
    path = _write(tmp_path, _tuned("t-sqlite"))
    assert main(["study", str(path), "--storage", url]) == 0
    _check_protocol(url, "t-sqlite")
    # a rerun resumes: nothing left to do, nothing duplicated
    assert main(["study", str(path), "--storage", url]) == 0
    assert len(optuna.load_study(study_name="t-sqlite", storage=open_storage(url)).trials) == 10
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["report", "t-sqlite", "--storage", url, "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "| full |" in md and "| lp_ft |" in md and "(2)" in md  # rows are the arms, two seed runs each
    tuning = (out / "tuning.md").read_text()
    assert "same budget of 3 trials" in tuning and "| freeze.strategy=lp_ft | 3 / 0 / 0 | freeze.ft_lr, optim.lr |" \
        in tuning
    assert (out / "tuning_sensitivity.png").stat().st_size > 5000
    # the W&B report run holds the tuning table beside the statistics table
    from tl_research.adapters.wandb import decode, run_file
    from tl_research.reports.report import run_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_report("t-sqlite", url, tmp_path / "logged")
    history = decode(run_file(next((tmp_path / "logged" / "wandb").glob("offline-run-*"))))["history"]
    assert any("report/tuning/_type" in row for row in history) and any("report/table/_type" in r for r in history)
    claims = tmp_path / "c.yaml"
    claims.write_text("claims:\n  - {a: {freeze.strategy: lp_ft}, relation: '>', b: {freeze.strategy: full}}\n")
    assert main(["check", "t-sqlite", str(claims), "--storage", url]) in (0, 1)  # judged: no "pin optim.lr" error


def test_a_tuned_study_with_two_workers_on_a_journal(tmp_path):
    url = str(tmp_path / "journal.log")
    assert main(["study", str(_write(tmp_path, _tuned("t-journal"))), "--storage", url, "--workers", "2"]) == 0
    _check_protocol(url, "t-journal")
    # each trial folder says its phase and cell
    trials = optuna.load_study(study_name="t-journal", storage=open_storage(url)).get_trials(
        states=(TrialState.COMPLETE,))
    for t in trials:
        name = Path(t.user_attrs["run_dir"]).name
        assert name.startswith(f"trial-{t.number:04d}-{t.user_attrs['phase']}-"), name
        assert f"-{t.params['freeze.strategy']}-" in name, name
        if t.user_attrs["phase"] == "seed":
            assert f"-seed{t.params['seed']}-" in name, name
        else:
            assert f"-lr{t.params['optim.lr']:.3g}-" in name, name


def test_a_killed_tuned_study_reruns_to_the_same_protocol(tmp_path):
    """SIGKILL mid tuning trial: the rerun waits for the trial's heartbeat to go stale, retries that setting, and
    every arm still gets exactly its budget, then its seed runs."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    cfg = _write(tmp_path, {**_tuned("t-kill"), "heartbeat_interval": 1, "grace_period": 2}, epochs=3)
    tlr = [sys.executable, "-m", "tl_research.cli", "study", str(cfg), "--storage", url]
    kill_mid_trial(tlr, tmp_path / "studies.db")  # inside a tuning trial: the first six are all tuning
    before = optuna.load_study(study_name="t-kill", storage=open_storage(url)).trials
    assert any(t.state == TrialState.RUNNING and t.user_attrs.get("phase") == "tune" for t in before)
    done = subprocess.run(tlr, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_protocol(url, "t-kill", killed=1)


def test_grid_sampler_tries_every_point_per_arm(tmp_path):
    study = _tuned("t-grid", sampler="grid", trials=None)
    study["arms"] = {"freeze.strategy": ["full", "linear_probe"]}
    study["tune"]["params"] = {"optim.lr": {"type": "categorical", "choices": [0.001, 0.01]}}
    study["seeds"] = 1
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(_write(tmp_path, study)), "--storage", url]) == 0
    trials = optuna.load_study(study_name="t-grid", storage=open_storage(url)).get_trials()
    points = sorted((t.params["freeze.strategy"], t.params["optim.lr"]) for t in trials
                    if t.user_attrs["phase"] == "tune")
    assert points == sorted((s, lr) for s in ("full", "linear_probe") for lr in (0.001, 0.01))
    assert sum(t.user_attrs["phase"] == "seed" for t in trials) == 2


def test_an_interrupted_tuning_trial_is_retried_and_a_failed_one_is_spent(tmp_path):
    """The budget counts what ran: a trial that failed with its error (a diverging lr) is spent; one handed back
    by an interrupted worker is queued again."""
    url = f"sqlite:///{tmp_path / 'st.db'}"
    from tl_research.studies.study import create_or_load
    from tl_research.studies.studyspec import load_study

    spec = load_study(_write(tmp_path, _tuned("t-budget")))
    study = create_or_load(spec, open_storage(url))
    assert tuned.enqueue_next(study, spec) == 6  # 3 per arm
    waiting = study.get_trials(states=(TrialState.WAITING,))
    storage = optuna_adapter.storage(study)
    for trial, error in zip(waiting[:2], ("FloatingPointError: non-finite result", "interrupted")):
        tid = optuna_adapter.trial_id(trial)
        storage.set_trial_state_values(tid, state=TrialState.RUNNING)
        storage.set_trial_user_attr(tid, "error", error)
        storage.set_trial_state_values(tid, state=TrialState.FAIL)
    assert tuned.enqueue_next(study, spec) == 1  # only the interrupted one comes back


@pytest.mark.parametrize("change, message", [
    ({"grid": {"freeze.strategy": ["full"]}}, "study.grid: a tuned study compares `arms`"),
    ({"tune": {"params": {"optim.lr": LR}}}, "study.tune.trials: missing"),
    ({"tune": {"params": {"optim.lr": LR}, "trials": 2, "colour": 1}}, "study.tune.colour: unknown key"),
    ({"tune": {"params": {"freeze.strategy": {"type": "categorical", "choices": ["full"]}}, "trials": 2}},
     "study.tune.params.freeze.strategy: is an arm key"),
    ({"tune": {"params": {"optim.lr": LR}, "trials": 2, "sampler": "grid"}},
     "study.tune.params.optim.lr: the grid sampler takes categorical parameters only"),
    ({"tune": {"params": {"freeze.ft_lr": LR}, "trials": 2}}, "none of its keys applies to the arm"),
    ({"arms": [1]}, "study.arms: a mapping of keys to lists of values (every combination an arm), or a list of arms"),
])
def test_bad_tuned_studies_are_one_line(tmp_path, capsys, change, message):
    study = {**_tuned("t-bad"), **change}
    assert main(["study", str(_write(tmp_path, study)), "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_one_value_range_equal_to_the_base_is_still_tuned_where_it_applies(tmp_path):
    """A smoke variant narrows a range to one value, which may be the base's own: the key still applies (the arm
    takes it), while an option the arm's strategy drops (freeze.ft_lr for full) still does not."""
    from tl_research.studies.studyspec import load_study

    one = {"type": "categorical", "choices": [0.001]}
    study = {**_tuned("t-one"), "tune": {"params": {"optim.lr": one, "freeze.ft_lr": one}, "trials": 1}}
    spec = load_study(_write(tmp_path, study), ["optim.lr=0.001"])
    assert {a["freeze.strategy"]: set(keys) for a, keys in zip(spec.arms, spec.tuned)} == {
        "full": {"optim.lr"}, "lp_ft": {"optim.lr", "freeze.ft_lr"}}


@pytest.mark.slow
def test_the_example_tuned_study_on_real_weights_and_data(tmp_path):
    """experiments/studies/mnv2_tuned.yaml, reduced (its lp_ft and llrd arms, 2 tuning trials, 2 seeds, 64 images at
    32 px, 1 epoch), on the offline MobileNetV2 weights and Animal-MNIST: both phases, the protocol, the report."""
    from tl_research.reports.report import run_report
    from tl_research.studies.study import run_study
    from tl_research.studies.studyspec import load_study

    sets = [f"output_dir={tmp_path / 'runs'}", "tracking.mode=disabled", "data.train_limit=64",
            "data.eval_limit=32", "data.image_size=32", "trainer.max_epochs=1", "freeze.probe_epochs=1"]
    spec = load_study("experiments/studies/mnv2_tuned.yaml", sets, {"seeds": 2, "pruner": "none", "arms": {
        "freeze.strategy": ["lp_ft", "llrd"]}, "tune": {
        "params": {"optim.lr": LR, "freeze.ft_lr": LR, "freeze.decay": {"type": "float", "low": 0.5, "high": 1.0}},
        "trials": 2}})
    url = f"sqlite:///{tmp_path / 'st.db'}"
    study = run_study(spec, url)
    trials = study.get_trials()
    assert len(trials) == 2 * (2 + 2) and all(t.state == TrialState.COMPLETE for t in trials)
    assert {tuple(sorted(k for k in t.params if k != "freeze.strategy")) for t in trials
            if t.user_attrs["phase"] == "tune"} == {("freeze.ft_lr", "optim.lr"), ("freeze.decay", "optim.lr")}
    assert not any("test/acc" in t.user_attrs for t in trials if t.user_attrs["phase"] == "tune")
    table, files = run_report("mnv2-tuned", url, tmp_path / "report")
    assert set(table.rows) == {"lp_ft", "llrd"} and all(c.n == 2 for c in table.cells.values())
    assert {c.interval.method for c in table.cells.values()} == {"crossed-t"}
    assert tmp_path / "report" / "tuning.md" in files


def test_a_tuning_trial_is_pruned_against_its_own_arm_only():
    """Arm B is slower than arm A from the first epoch: study-wide, the median pruner would prune B's trial for
    being B; within B it is above its arm's median and goes on (and A's trials never see B's)."""
    from optuna.distributions import FloatDistribution

    from tl_research.studies import tuned

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    a, b = tuned.arm_key({"freeze.strategy": "full"}), tuned.arm_key({"freeze.strategy": "lp_ft"})
    for key, value in ((a, 0.90), (a, 0.92), (b, 0.30), (b, 0.36)):
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr": 0.001}, distributions={"optim.lr": FloatDistribution(1e-5, 1e-1, log=True)},
            value=value, intermediate_values={0: value}, user_attrs={tuned.PHASE: tuned.TUNE, tuned.ARM: key}))
    running = study.ask()
    running.set_user_attr(tuned.PHASE, tuned.TUNE)
    running.set_user_attr(tuned.ARM, b)
    running.report(0.34, 0)
    assert running.should_prune()  # the study-wide median (0.63) would prune it
    assert not tuned.should_prune(running)  # its arm's median is 0.33
    running.report(0.20, 1)
    assert not tuned.should_prune(running)  # no trial of its arm reported epoch 1: nothing to compare with
    laggard = study.ask()
    laggard.set_user_attr(tuned.PHASE, tuned.TUNE)
    laggard.set_user_attr(tuned.ARM, b)
    laggard.report(0.31, 0)
    assert tuned.should_prune(laggard)  # below its own arm's median


def test_a_tuned_study_sweeps_a_regularizers_strength(tmp_path):
    """regularize.bss.eta is tuned like any other key: each tuning trial runs (and records) the value it drew, and
    the seed runs take the best one."""
    study = {"name": "t-bss", "kind": "tuned", "arms": {"freeze.strategy": ["full"]}, "seeds": 1, "pruner": "none",
             "tune": {"params": {"regularize.bss.eta": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True}},
                      "trials": 2, "sampler": "random"}}
    url = f"sqlite:///{tmp_path / 'st.db'}"
    # the base experiment names the term (a tuned key of a regularizer never turns it on by itself)
    assert main(["study", str(_write(tmp_path, study)), "--storage", url, "--set", "regularize.bss.k=1"]) == 0
    trials = optuna.load_study(study_name="t-bss", storage=open_storage(url)).get_trials()
    tuning = [t for t in trials if t.user_attrs["phase"] == "tune"]
    assert len(tuning) == 2 and len({t.params["regularize.bss.eta"] for t in tuning}) == 2
    for t in trials:
        config = yaml.safe_load(Path(t.user_attrs["run_dir"], "config.yaml").read_text())
        assert config["regularize"] == {"bss": {"eta": t.params["regularize.bss.eta"], "k": 1}}
        assert t.user_attrs["train/bss"] > 0
    best = max(tuning, key=lambda t: (t.value, -t.number))
    (seed_run,) = [t for t in trials if t.user_attrs["phase"] == "seed"]
    assert seed_run.params["regularize.bss.eta"] == best.params["regularize.bss.eta"]


def test_arms_listed_one_by_one_tune_a_regularizers_key_only_where_the_arm_has_the_term(tmp_path):
    from tl_research.studies.studyspec import load_study

    study = {"name": "t-list", "kind": "tuned", "seeds": 1,
             "arms": [{"freeze.strategy": "full", "regularize.bss": None}, {"freeze.strategy": "lp_ft"}],
             "tune": {"params": {"optim.lr": LR, "regularize.bss.eta": LR}, "trials": 2}}
    spec = load_study(_write(tmp_path, study), ["regularize.bss.k=1"])
    assert spec.arms == [{"freeze.strategy": "full", "regularize.bss": None}, {"freeze.strategy": "lp_ft"}]
    assert spec.tuned == [["optim.lr"], ["optim.lr", "regularize.bss.eta"]]
