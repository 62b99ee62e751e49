"""Studies on real Optuna storages: grid cells exactly once with 2 workers (journal file, PostgreSQL), resume after
SIGKILL, pruning, a two-objective Pareto front, and bad study input."""

import json
import os
import signal
import sqlite3
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

from tl_research.adapters import optuna as optuna_adapter
from tl_research.cli.main import main
from tl_research.studies.storage import open_storage

TLR = [sys.executable, "-m", "tl_research.cli"]


def _base(tmp_path, epochs=1):
    return {"name": "tiny", "output_dir": str(tmp_path / "runs"),
            "backbone": {"name": "timm/test_efficientnet", "weights": "none"},
            "data": {"name": "animal-mnist", "train_limit": 32, "eval_limit": 16, "image_size": 32, "batch_size": 16},
            "trainer": {"max_epochs": epochs, "patience": None, "accelerator": "cpu"},
            "tracking": {"mode": "disabled"}}


def _write(tmp_path, study, epochs=1, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"experiment": _base(tmp_path, epochs), "study": study}))
    return path


def _grid(name):
    return {"name": name, "kind": "grid", "grid": {"freeze.strategy": ["linear_probe", "full"]}, "seeds": 2}


def _cells_exactly_once(url, name):
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    cells = Counter((t.params["freeze.strategy"], t.params["seed"]) for t in done)
    assert cells == Counter({(s, seed): 1 for s in ("linear_probe", "full") for seed in (0, 1)})
    assert all(Path(t.user_attrs["run_dir"]).joinpath("metrics.json").exists() for t in done)
    assert all("test/acc" in t.user_attrs and t.user_attrs["data/train_size"] == 32 for t in done)
    return study


def test_grid_two_workers_journal_storage(tmp_path, capsys):
    url = str(tmp_path / "journal.log")
    assert main(["study", str(_write(tmp_path, _grid("g-journal"))), "--storage", url, "--workers", "2"]) == 0
    study = _cells_exactly_once(url, "g-journal")
    assert len(study.trials) == 4
    # re-running resumes: nothing left to do, nothing duplicated
    assert main(["study", str(_write(tmp_path, _grid("g-journal"))), "--storage", url]) == 0
    assert len(optuna.load_study(study_name="g-journal", storage=open_storage(url)).trials) == 4
    assert "4/4 done" in capsys.readouterr().out


def test_local_workers_split_the_cores_between_them(tmp_path, monkeypatch):
    """Two workers each computing on every core oversubscribe them: each gets its share of the cores (run.json
    records the threads it computed on), unless the user set the thread count."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # (`make test` sets both to 1 in its pytest workers)
        monkeypatch.delenv(var, raising=False)
    url = str(tmp_path / "journal.log")
    assert main(["study", str(_write(tmp_path, _grid("g-threads"))), "--storage", url, "--workers", "2"]) == 0
    study = _cells_exactly_once(url, "g-threads")
    cores = len(os.sched_getaffinity(0))
    share = max(1, cores // 2)
    threads = {json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())["cpu_threads"]
               for t in study.trials}
    assert threads == {share}
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))  # (torch computes on at most the cores there are)
    url = str(tmp_path / "journal-set.log")
    assert main(["study", str(_write(tmp_path, _grid("g-set"))), "--storage", url, "--workers", "2"]) == 0
    study = _cells_exactly_once(url, "g-set")
    assert {json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())["cpu_threads"]
            for t in study.trials} == {cores}


def test_grid_two_workers_postgresql(tmp_path, postgres_url):
    url = postgres_url
    name = f"g-pg-{uuid.uuid4().hex[:8]}"
    assert main(["study", str(_write(tmp_path, _grid(name))), "--storage", url, "--workers", "2"]) == 0
    _cells_exactly_once(url, name)


CLAIMER = """
import json, sys, time
import optuna
from tl_research.studies.storage import open_storage
from tl_research.studies.queue import claim
study = optuna.load_study(study_name="race", storage=open_storage(sys.argv[1]))
while time.time() < float(sys.argv[2]):  # every process starts claiming at the same moment
    pass
claimed = []
while (trial := claim(study, [])) is not None:
    claimed.append(trial.number)
print(json.dumps(claimed))
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_workers_claiming_at_once_take_each_queued_cell_once(tmp_path, request, kind):
    """Four processes claim from one queue as fast as they can: no cell is claimed twice (SQLite's driver made
    Optuna's check-then-set non-atomic until each transaction began IMMEDIATE: 18 of 200 were claimed twice)."""
    url = {"sqlite": lambda: f"sqlite:///{tmp_path / 'q.db'}", "journal": lambda: str(tmp_path / "q.log"),
           "postgresql": lambda: request.getfixturevalue("postgres_url")}[kind]()
    name = f"race-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    for i in range(80):
        study.enqueue_trial({"x": i}, skip_if_exists=False)
    start = time.time() + 4  # after the four interpreters have imported optuna
    script = CLAIMER.replace('"race"', repr(name))
    procs = [subprocess.Popen([sys.executable, "-c", script, url, str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    claimed = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert Counter(n for c in claimed for n in c) == Counter(range(80))


def _unfinished_checkpoints(trials: Path) -> int:
    """Trial folders under `trials` that hold a last checkpoint and no result yet: fine-tuning trials mid-fit (a
    linear probe's trial, seconds long, writes none)."""
    return sum(not (p.parent.parent / "metrics.json").exists() for p in trials.glob("*/checkpoints/last.ckpt"))


def kill_mid_trial(command: list[str], db_path: Path, trials: Path | None = None) -> None:
    """Start `command` (a study on the SQLite file `db_path`) and SIGKILL its process group inside a trial, after
    one trial finished (and, with `trials`, once a trial folder there has saved a last checkpoint)."""
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        try:  # read-only peek: opening an Optuna storage here would race the study's schema creation
            with sqlite3.connect(db_path, timeout=5) as db:
                states = {row[0] for row in db.execute("select state from trials")}
                beating = db.execute("select count(*) from trials t join trial_heartbeats h "
                                     "on h.trial_id = t.trial_id where t.state = 'RUNNING'").fetchone()[0]
        except sqlite3.Error:
            continue
        if "COMPLETE" in states and beating and (trials is None or _unfinished_checkpoints(trials)):
            break  # a claimed trial whose worker has started its heartbeat (and, with `trials`, saved an epoch)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_study_reruns_to_completion(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = {**_grid("g-kill"), "heartbeat_interval": 1, "grace_period": 2}
    # fine-tuning trials long enough that the kill lands between a saved epoch and the trial's end (with 3 epochs
    # a loaded machine's polling missed that window once)
    cfg = _write(tmp_path, spec, epochs=15)
    kill_mid_trial([*TLR, "study", str(cfg), "--storage", url], tmp_path / "studies.db",
                   tmp_path / "runs" / "studies" / "g-kill")
    before = optuna.load_study(study_name="g-kill", storage=open_storage(url)).trials
    assert any(t.state == TrialState.RUNNING for t in before), "the kill did not land mid-trial"
    # rerun at once, inside the grace period: the rerun must wait for the killed cell's heartbeat to go stale
    # (not report "0 queued" and stop with the cell missing)
    done = subprocess.run([*TLR, "study", str(cfg), "--storage", url], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    # the killed trial is reported as retried, not as a failure
    assert "1 trial(s) retried" in done.stdout and "failed:" not in done.stdout
    study = _cells_exactly_once(url, "g-kill")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1  # the killed trial, retried by Optuna as a new one
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number)
    # the retry went on in the killed attempt's folder from its last checkpoint, instead of starting over
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_dir"] == failed[0].user_attrs["run_dir"]
    metrics = json.loads(Path(retry.user_attrs["run_dir"], "metrics.json").read_text())
    assert 0 <= metrics["resumed_from_epoch"] < metrics["epochs"]


def test_a_worker_says_why_it_waits_for_a_trial_held_elsewhere(tmp_path):
    """One cell held by a worker that no longer beats: the next worker says what it waits for and for how long,
    then retries the cell once the heartbeat is stale."""
    from tl_research.errors import StudyNotice
    from tl_research.studies.study import prepare_study, work
    from tl_research.studies.studyspec import load_study

    grid = {**_grid("g-wait"), "grid": {"freeze.strategy": ["linear_probe"]}, "seeds": 1, "heartbeat_interval": 1,
            "grace_period": 3}
    spec = load_study(_write(tmp_path, grid))
    study, queued = prepare_study(spec, f"sqlite:///{tmp_path / 'st.db'}")
    assert queued == 1
    held = study.get_trials(states=(TrialState.WAITING,))[0]
    storage, tid = optuna_adapter.storage(study), optuna_adapter.trial_id(held)
    storage.set_trial_state_values(tid, state=TrialState.RUNNING)
    storage.record_heartbeat(tid)  # fresh: a worker elsewhere, then it stops beating
    with pytest.warns(StudyNotice, match=r"waiting for 1 trial\(s\) running elsewhere.*once its heartbeat is 3 s old"):
        assert work(study, spec) == 1  # the retried cell, run here
    states = Counter(t.state for t in study.get_trials())
    assert states == Counter({TrialState.FAIL: 1, TrialState.COMPLETE: 1})


def test_sigterm_stops_a_study_and_its_workers_and_hands_the_cells_back(tmp_path):
    """SIGTERM to `tlr study --workers 2` mid-trial: it ends with 143, its workers with it; their cells are failed
    at once (no RUNNING trial waits for a stale heartbeat: the grace period is longer than the rerun may take) and
    no further cell starts; a rerun finishes every cell exactly once."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    # trials long enough that neither can finish between the check below and the signal (3 epochs once raced)
    cfg = _write(tmp_path, {**_grid("g-term"), "heartbeat_interval": 1, "grace_period": 3600}, epochs=15)
    proc = subprocess.Popen([*TLR, "study", str(cfg), "--storage", url, "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    # both workers inside a fine-tuning trial, an epoch saved: a linear probe's trial is over in seconds and once
    # finished between this check and the signal
    while time.time() < deadline and _unfinished_checkpoints(tmp_path / "runs" / "studies" / "g-term") < 2:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    trials = optuna.load_study(study_name="g-term", storage=open_storage(url)).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 2 and all(t.user_attrs.get("error") == "interrupted" for t in stopped)  # one a worker
    done = subprocess.run([*TLR, "study", str(cfg), "--storage", url], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _cells_exactly_once(url, "g-term")


def test_sigterm_mid_fit_fails_a_search_trial_and_stops(tmp_path):
    """In a search, Lightning turns SIGTERM into SystemExit, which Optuna would leave RUNNING: the trial is failed
    ("interrupted"), the study stops with 143 and starts no further trial."""
    search = {"name": "s-term", "kind": "search", "n_trials": 3, "sampler": "random", "pruner": "none",
              "heartbeat_interval": 1, "params": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}}
    cfg = _write(tmp_path, search, epochs=20)
    url = f"sqlite:///{tmp_path / 'st.db'}"
    proc = subprocess.Popen([*TLR, "study", str(cfg), "--storage", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "runs" / "studies").glob("s-term/*/checkpoints/last.ckpt")):
        time.sleep(0.2)  # an epoch has ended: the trial is inside Lightning's fit
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    trials = optuna.load_study(study_name="s-term", storage=open_storage(url)).trials
    assert [(t.state, t.user_attrs.get("error")) for t in trials] == [(TrialState.FAIL, "interrupted")]


def test_search_prunes_and_records_last_value(tmp_path):
    study_cfg = {"name": "s-prune", "kind": "search", "n_trials": 8, "sampler": "random", "sampler_seed": 3,
                 "pruner": "median", "params": {"optim.lr": {"type": "float", "low": 1e-6, "high": 0.3, "log": True},
                                                "freeze.depth": {"type": "int"}}}
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(_write(tmp_path, study_cfg, epochs=6)), "--storage", url]) == 0
    study = optuna.load_study(study_name="s-prune", storage=open_storage(url))
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and len(study.trials) == 8
    for t in pruned:
        last_step = max(t.intermediate_values)
        assert t.user_attrs["last_reported"] == pytest.approx(t.intermediate_values[last_step])
        assert last_step >= 3  # judged only after half its 6 epochs (steps 0-2 are its warm-up)
    depths = [t.params["freeze.depth"] for t in study.trials]
    assert all(0 <= d <= 6 for d in depths)  # bounded by test_efficientnet's 6 groups automatically


def test_two_objective_search_returns_pareto_front(tmp_path):
    study_cfg = {"name": "s-pareto", "kind": "search", "n_trials": 5, "sampler": "random", "pruner": "none",
                 "objectives": [{"metric": "val/acc", "direction": "maximize"},
                                {"metric": "throughput/train_samples_per_sec", "direction": "maximize"}],
                 "params": {"freeze.strategy": {"type": "categorical", "choices": ["linear_probe", "full"]},
                            "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}}
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(_write(tmp_path, study_cfg)), "--storage", url]) == 0
    study = optuna.load_study(study_name="s-pareto", storage=open_storage(url))
    front = study.best_trials
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert front and len(done) == 5

    def dominates(a, b):
        return all(x >= y for x, y in zip(a.values, b.values)) and a.values != b.values

    assert not any(dominates(o, f) for f in front for o in done)
    assert all(any(dominates(f, o) for f in front) for o in done if o not in front)


@pytest.mark.parametrize("study, message", [
    ({"kind": "grid", "grid": {"freeze.depht": [1, 2]}}, "study.grid.freeze.depht: freeze.depht: unknown key"),
    ({"kind": "grid", "grid": {"freeze.depth": []}}, "study.grid.freeze.depth: expected a non-empty list"),
    ({"kind": "grid", "grid": {"freeze.strategy": ["depth"], "freeze.depth": [3, 9]}},
     "study.grid.freeze.depth: 9 is more than the backbone's 6 layer groups"),
    ({"kind": "search", "params": {"freeze.depth": {"type": "int", "low": 0, "high": 40}}},
     "bounds 0..40 are outside the backbone's 0..6 layer groups"),
    ({"kind": "search", "sampler": "cmaes", "params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}},
     "study.sampler: 'cmaes' is not allowed (allowed: tpe, random)"),
    ({"kind": "grid", "grid": {"optim.lr": [0.1]}, "objectives": [{"metric": "test/acc"}]},
     "cannot select on 'test/acc'"),
])
def test_bad_study_input_exits_2_and_leaves_storage_untouched(tmp_path, capsys, study, message):
    db = tmp_path / "untouched.db"
    assert main(["study", str(_write(tmp_path, study)), "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not db.exists()


def test_unopenable_storage_exits_2(tmp_path, capsys):
    cfg = _write(tmp_path, _grid("g-bad"))
    assert main(["study", str(cfg), "--storage", "postgresql+psycopg://nobody:x@127.0.0.1:1/none"]) == 2
    assert "--storage: cannot open" in capsys.readouterr().err
    assert main(["study", str(cfg), "--storage", "mysql://nowhere/db"]) == 2
    assert main(["worker", "--study", "missing", "--storage", f"sqlite:///{tmp_path / 'w.db'}"]) == 2
    assert "--storage: no study storage at" in capsys.readouterr().err and not (tmp_path / "w.db").exists()


def test_study_logs_trials_table_to_wandb(tmp_path, monkeypatch):
    from tl_research.adapters.wandb import decode, run_file

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    study = {"name": "g-wandb", "kind": "grid", "grid": {"freeze.strategy": ["linear_probe"]}, "seeds": 1}
    url = f"sqlite:///{tmp_path / 'st.db'}"
    assert main(["study", str(_write(tmp_path, study)), "--storage", url]) == 0
    trial = optuna.load_study(study_name="g-wandb", storage=open_storage(url)).trials[0]
    run = decode(run_file(trial.user_attrs["wandb_dir"]))
    assert run["run"].run_group == "g-wandb"
    assert run["summary"]["test/acc"] == pytest.approx(trial.user_attrs["test/acc"])
    summary_dirs = list((tmp_path / "runs" / "studies" / "g-wandb" / "wandb").glob("offline-run-*"))
    assert len(summary_dirs) == 1
    summary = decode(run_file(summary_dirs[0]))
    assert summary["run"].job_type == "study-summary" and summary["run"].run_group == "g-wandb"
    row = next(r for r in summary["history"] if "study/trials/_type" in r)
    assert row["study/trials/_type"] == "table-file" and row["study/trials/nrows"] == 1
    table = json.loads((summary_dirs[0] / "files" / row["study/trials/path"]).read_text())
    assert table["data"][0][:2] == [0, "COMPLETE"] and "freeze.strategy" in table["columns"]


def test_a_study_stored_by_an_older_version_resumes(tmp_path):
    """A later version adds study options: a stored definition without them (at their defaults) still matches."""
    from tl_research.studies.study import SPEC_ATTR, create_or_load
    from tl_research.studies.studyspec import load_study

    url = f"sqlite:///{tmp_path / 'st.db'}"
    spec = load_study(_write(tmp_path, _grid("old")))
    study = create_or_load(spec, open_storage(url))
    older = json.loads(json.dumps(spec.to_json()))
    del older["study"]["prefilter"]  # what an older version stored
    study.set_user_attr(SPEC_ATTR, older)
    create_or_load(spec, open_storage(url))  # no "different definition" error
    changed = load_study(_write(tmp_path, {**_grid("old"), "seeds": 3}))
    with pytest.raises(Exception, match="different definition"):
        create_or_load(changed, open_storage(url))


def test_worker_prints_a_line_per_trial_and_dashboard_args(tmp_path, capsys):
    from tl_research.studies.storage import dashboard_arg
    from tl_research.studies.study import prepare_study
    from tl_research.studies.studyspec import load_study

    url = f"sqlite:///{tmp_path / 'st.db'}"
    spec = load_study(_write(tmp_path, {"name": "w", "kind": "grid", "grid": {"freeze.strategy": ["linear_probe"]},
                                        "seeds": 2}))
    study, queued = prepare_study(spec, url)
    assert queued == 2 and study.metric_names == ["val/acc"]
    assert main(["worker", "--study", "w", "--storage", url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["trial 0 complete", "trial 1 complete"]
    assert "val/acc=" in lines[0] and lines[-1] == "worker done: 2 trials"
    assert dashboard_arg(url) == url and dashboard_arg(str(tmp_path / "j.log")) == str(tmp_path / "j.log")
    assert dashboard_arg(f"journal:{tmp_path / 'j.log'}") == str(tmp_path / "j.log")


def test_a_tied_grid_axis_sets_every_key_it_names(tmp_path, capsys):
    """`a+b` in a grid is one axis whose values go to both keys (Yosinski's AnB: keep n groups, freeze n)."""
    from tl_research.studies.studyspec import load_study

    base = {**_base(tmp_path), "freeze": {"strategy": "depth", "depth": 0}}
    path = tmp_path / "tied.yaml"
    path.write_text(yaml.safe_dump({"experiment": base, "study": {
        "name": "tied", "kind": "grid", "seeds": 1, "grid": {"backbone.keep_groups+freeze.depth": [1, 3]}}}))
    spec = load_study(path)
    exps = [spec.experiment_for(cell) for cell in spec.cells]
    assert [(e.backbone.keep_groups, e.freeze.options.depth) for e in exps] == [(1, 1), (3, 3)]
    bad = _write(tmp_path, {"name": "bad", "kind": "grid", "grid": {"backbone.keep_groups+freeze.nosuch": [1]}},
                 name="bad.yaml")
    assert main(["study", str(bad), "--storage", f"sqlite:///{tmp_path / 'b.db'}"]) == 2
    assert "freeze.nosuch" in capsys.readouterr().err


def test_study_checkpoints_trim_finished_trials(tmp_path):
    """study.checkpoints: `best` keeps best.ckpt's weights (still loadable) without what only resuming reads,
    `none` keeps no checkpoint; the key can change on a resume (workers follow the coordinator's value)."""
    import torch

    from tl_research.lifecycle.inference import load_run
    from tl_research.run_folder import trim_checkpoints
    from tl_research.studies.study import load_existing

    url = f"sqlite:///{tmp_path / 'st.db'}"
    grid = {"name": "ck", "kind": "grid", "grid": {"freeze.strategy": ["full"]}, "seeds": 1}
    assert main(["study", str(_write(tmp_path, grid)), "--storage", url]) == 0
    run_dir = Path(optuna.load_study(study_name="ck", storage=url).trials[0].user_attrs["run_dir"])
    best, last = run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "last.ckpt"
    full = torch.load(best, weights_only=True)
    assert "optimizer_states" in full and last.is_file()  # the default keeps everything, as a fit does
    size = best.stat().st_size

    trim_checkpoints(run_dir, "best")
    slim = torch.load(best, weights_only=True)
    assert not last.exists() and "optimizer_states" not in slim and best.stat().st_size < size
    assert slim["state_dict"].keys() == full["state_dict"].keys()
    assert all(torch.equal(slim["state_dict"][k], v) for k, v in full["state_dict"].items())
    loaded = load_run(run_dir).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in full["state_dict"].items())

    # an operational key: the same study resumes with another value, and the stored definition follows
    assert main(["study", str(_write(tmp_path, {**grid, "checkpoints": "none"})), "--storage", url]) == 0
    assert load_existing("ck", open_storage(url))[1].config.checkpoints == "none"

    probe = {"name": "ck-none", "kind": "grid", "grid": {"freeze.strategy": ["full"]}, "seeds": 1,
             "checkpoints": "none"}
    assert main(["study", str(_write(tmp_path, probe, name="n.yaml")), "--storage", url]) == 0
    trial = optuna.load_study(study_name="ck-none", storage=url).trials[0]
    assert trial.state == TrialState.COMPLETE
    assert Path(trial.user_attrs["run_dir"], "metrics.json").is_file()
    assert not Path(trial.user_attrs["run_dir"], "checkpoints").exists()


def test_study_changes_touch_only_the_sections_a_study_has(tmp_path):
    """A reduced variant's `grid` / `tune` changes (reproduce.yaml smoke / pilot) apply where the study has that
    section: a grid axis keeps its other axes (a tuned study's arms are its grid), `tune: {trials}` keeps the space,
    and neither adds a section."""
    from tl_research.studies.studyspec import load_study

    grid = load_study(_write(tmp_path, {**_grid("g"), "grid": {"freeze.strategy": ["linear_probe", "full"],
                                                              "data.shots": [1, 4]}}),
                      study_changes={"grid": {"data.shots": [2], "other.key": [1]}, "tune": {"trials": 1}})
    assert sorted(grid.cells[i]["data.shots"] for i in range(len(grid.cells))) == [2] * 4 and grid.tune is None
    space = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    tuned = load_study(_write(tmp_path, {"name": "t", "kind": "tuned", "arms": {"freeze.strategy": ["full", "lp_ft"]},
                                         "tune": {"params": space, "trials": 6}, "seeds": 2}, name="t.yaml"),
                       study_changes={"grid": {"data.shots": [2], "freeze.strategy": ["full"]}, "tune": {"trials": 1},
                                      "seeds": 1})
    assert tuned.tune.trials == 1 and list(tuned.tune.params) == ["optim.lr"] and tuned.config.grid is None
    assert tuned.arms == [{"freeze.strategy": "full"}]
