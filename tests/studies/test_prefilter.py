"""`study.prefilter`: candidates ranked by a transferability score before training; only the best N run."""

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.studies.prefilter import ATTR

BACKBONES = ["timm/test_efficientnet", "timm/test_resnet"]


def _write(tmp_path, study):
    exp = tiny_experiment(tmp_path, freeze={"strategy": "depth", "depth": 1}, trainer={"max_epochs": 1},
                          data={"train_limit": None})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"experiment": exp, "study": study}))
    return path


def test_grid_runs_only_the_kept_candidates(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'st.db'}"
    cfg = _write(tmp_path, {"name": "pf", "kind": "grid", "grid": {"backbone.name": BACKBONES, "freeze.depth": [1, 2]},
                            "prefilter": {"score": "probe", "keep": 2, "per_class": 6}})
    assert main(["study", str(cfg), "--storage", url]) == 0
    study = optuna.load_study(study_name="pf", storage=url)
    record = study.user_attrs[ATTR]
    assert len(record["ranking"]) == 4 and record["score"] == "probe"
    probes = [r["probe"] for r in record["ranking"]]
    assert probes == sorted(probes, reverse=True) and record["keep"] == [
        {k: r[k] for k in ("backbone.name", "freeze.depth")} for r in record["ranking"][:2]]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    ran = [(t.params["backbone.name"], t.params["freeze.depth"]) for t in done]
    assert sorted(ran) == sorted((c["backbone.name"], c["freeze.depth"]) for c in record["keep"])
    assert main(["study", str(cfg), "--storage", url]) == 0  # resume: nothing new, the ranking kept as it was
    again = optuna.load_study(study_name="pf", storage=url)
    assert len(again.trials) == 2 and again.user_attrs[ATTR] == record
    capsys.readouterr()
    out = tmp_path / "rep"
    assert main(["report", "pf", "--storage", url, "--out", str(out), "--rows", "backbone.name",
                 "--cols", "freeze.depth"]) == 0
    assert "missing" not in capsys.readouterr().out  # the dropped candidates are not missing cells
    assert "Pre-filter: candidates ranked by probe" in (out / "prefilter.md").read_text()


def test_search_tries_the_kept_candidates_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'st.db'}"
    cfg = _write(tmp_path, {"name": "pfs", "kind": "search", "n_trials": 3, "pruner": "none",
                            "params": {"backbone.name": {"type": "categorical", "choices": BACKBONES},
                                       "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
                            "prefilter": {"score": "logme", "keep": 1, "per_class": 6}})
    assert main(["study", str(cfg), "--storage", url]) == 0
    study = optuna.load_study(study_name="pfs", storage=url)
    first = min(study.trials, key=lambda t: t.number)
    assert first.params["backbone.name"] == study.user_attrs[ATTR]["keep"][0]["backbone.name"]


@pytest.mark.parametrize("study, message", [
    ({"grid": {"optim.lr": [0.1]}, "prefilter": {"keep": 1}}, "sweeps neither backbone.name nor freeze.depth"),
    ({"grid": {"freeze.depth": [1, 2]}, "prefilter": {"score": "vibes"}}, "study.prefilter.score: 'vibes'"),
    ({"grid": {"freeze.depth": [1, 2]}, "prefilter": {"keep": 0}}, "study.prefilter.keep: 0 is out of range"),
])
def test_bad_prefilter(tmp_path, capsys, study, message):
    db = tmp_path / "st.db"
    assert main(["study", str(_write(tmp_path, {"name": "b", "kind": "grid", **study})),
                 "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not db.exists()
