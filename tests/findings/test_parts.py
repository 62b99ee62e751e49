"""A finding run in parts (each part a later session, its storage and run folders gone), its pilot and power plan,
and sanity checks reported apart from the claims: real Lightning runs of a tiny twin on real Animal-MNIST."""

import re
import shutil

import optuna
import pytest
import yaml

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.findings.claims import Verdict, finding_verdict
from tl_research.findings.reproduce import load_finding, reproduce
from tl_research.reports import archive
from tl_research.studies.study import run_study


@pytest.fixture
def finding(tmp_path):
    """A two-study finding: `fast` (probe vs full at lr 0.01) and `slow` (full at lr 1e-5), one study per part."""
    folder = tmp_path / "tiny_finding"
    folder.mkdir()
    (folder / "experiment.yaml").write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    for name, grid, lr in (("fast", ["linear_probe", "full"], 0.01), ("slow", ["full"], 1e-5)):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({
            "experiment": "experiment.yaml", "set": [f"optim.lr={lr}"],
            "study": {"name": name, "kind": "grid", "grid": {"freeze.strategy": grid}, "seeds": 3}}))
    (folder / "claims.yaml").write_text(yaml.safe_dump({
        "source": "a test", "paper_strength": True,
        "claims": [
            {"id": "full>probe", "study": "fast", "relation": ">", "expected": 0.05,
             "a": {"freeze.strategy": "full"}, "b": {"freeze.strategy": "linear_probe"}},
            {"id": "fast>slow", "study": "fast", "relation": ">", "expected": 0.05,
             "a": {"freeze.strategy": "full"}, "b": {"study": "slow", "freeze.strategy": "full"}}],
        "checks": [
            {"id": "probe~probe", "study": "fast", "relation": "≈", "within": 0.5,
             "a": {"freeze.strategy": "linear_probe"}, "b": {"freeze.strategy": "linear_probe"}}]}, sort_keys=False))
    (folder / "reproduce.yaml").write_text(yaml.safe_dump({
        "title": "Tiny", "studies": ["fast.yaml", "slow.yaml"],
        "parts": {"one": ["fast.yaml"], "two": ["slow.yaml"]},
        "pilot": {"seeds": 2, "set": ["data.train_limit=48"]}}))
    return folder


def _trials(folder, study):
    opened = archive.Archive(folder)
    trials = optuna.load_study(study_name=study, storage=opened.storage).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    lookup = opened.lookups(study)
    return [(t.params, t.user_attrs["test/acc"], lookup(t).pred.tolist()) for t in trials]


def test_a_finding_in_parts_is_judged_once_every_study_is_in(finding, tmp_path, capsys):
    results = finding / "results"
    assert main(["reproduce", str(finding), "--part", "one", "--out", str(tmp_path / "s1")]) == 0
    out = capsys.readouterr().out
    assert "the claims wait for studies not yet in the archive: slow (its other parts: --part one, two)" in out
    assert not (results / "claims.md").exists() and (results / "fast" / "results.md").is_file()
    first = _trials(results, "fast")
    assert len(first) == 6
    shutil.rmtree(tmp_path / "s1")  # the next session: no storage, no run folders, only the committed archive

    # (part two with two local workers: the same archive merge)
    code = main(["reproduce", str(finding), "--part", "two", "--out", str(tmp_path / "s2"), "--workers", "2"])
    out, err = capsys.readouterr()
    assert code in (0, 1) and "sanity checks (not reproduction evidence):" in out, err
    # part one's trials and predictions came through the merge unchanged, beside part two's
    assert _trials(results, "fast") == first and len(_trials(results, "slow")) == 3
    claims_md = (results / "claims.md").read_text()
    verdict = re.search(r"\*\*Verdict: (reproduced|partly reproduced|not reproduced|undecided)\*\* — of 2 claims",
                        claims_md)
    assert verdict, claims_md
    table, checks = claims_md.split("## Sanity checks (not reproduction evidence)")
    assert "| full>probe |" in table and "| fast>slow |" in table and "probe~probe" not in table
    # a cell against itself: a difference of exactly 0, equivalent within 0.5
    assert "| probe~probe | ≈ | **held** | +0.000 [+0.000, +0.000]" in checks
    assert "The 1 checks are their own family" in checks and "The 2 claims are one family" in table

    # the merged archive alone re-judges to the same bytes; a part re-run replaces only its own study
    judged = {p: p.read_bytes() for p in results.rglob("*.md")}
    for p in judged:
        p.unlink()
    assert main(["reproduce", str(finding), "--rejudge"]) == code
    assert {p: p.read_bytes() for p in results.rglob("*.md")} == judged


def test_a_part_stopped_midway_keeps_what_it_finished_and_a_later_session_continues_it(finding, tmp_path, capsys):
    """The session ends inside a part: its finished trials are archived (the study marked unfinished, the claims
    waiting); the next session, without storage or run folders, runs only the missing cells."""
    loaded, results = load_finding(str(finding)), finding / "results"

    def stop_after_two(spec, url):
        def progress(study):
            if len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) >= 2:
                raise KeyboardInterrupt
        run_study(spec, url, progress=progress)

    with pytest.raises(KeyboardInterrupt):
        reproduce(loaded, "full", tmp_path / "s1", stop_after_two, part="one")
    assert "fast is archived unfinished" in capsys.readouterr().out
    opened = archive.Archive(results)
    assert opened.unfinished() == ["fast"] and opened.finished() == []
    first = _trials(results, "fast")
    assert len(first) == 2
    assert main(["reproduce", str(finding), "--rejudge"]) == 0  # an unfinished study is not judged
    assert ("the claims wait for studies not yet in the archive: fast (stopped midway: 2 trials complete), slow"
            in capsys.readouterr().out)
    assert not (results / "claims.md").exists() and not (results / "fast").exists()  # nor its report
    shutil.rmtree(tmp_path / "s1")
    shutil.rmtree(tmp_path / "runs")  # the next session: only the committed archive

    assert main(["reproduce", str(finding), "--part", "one", "--out", str(tmp_path / "s2")]) == 0
    # the earlier session's unfinished cells (stored as failed, to keep trial numbers) are queued, not failures
    out = capsys.readouterr().out
    assert re.search(r"study fast \(grid, 6 trials\) .*: 4 queued; 2/6 done[^,\n]*\n", out), out
    again = archive.Archive(results)
    assert again.unfinished() == [] and again.finished() == ["fast"]
    # the two archived trials came through unchanged (their predictions from the archive), four ran now
    assert _trials(results, "fast")[:2] == first and len(_trials(results, "fast")) == 6
    assert len(list((tmp_path / "runs").glob("studies/fast/*/metrics.json"))) == 4


def test_the_pilot_writes_the_plan_the_full_run_prints(finding, tmp_path, capsys):
    # a pilot may run in parts too: the plan waits for the studies the claims name
    assert main(["reproduce", str(finding), "--pilot", "--part", "two", "--out", str(tmp_path / "p")]) == 0
    assert "the claims wait for studies not yet in the archive: fast" in capsys.readouterr().out
    assert not (finding / "pilot" / "plan.md").exists()
    assert main(["reproduce", str(finding), "--pilot", "--part", "one", "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    pilot = finding / "pilot"
    trials = {s: _trials(pilot, s) for s in ("fast", "slow")}
    assert len(trials["fast"]) == 4 and len(trials["slow"]) == 2  # the pilot's 2 seeds
    assert not (finding / "results").exists()  # the full run's folder is untouched
    plan_md = (pilot / "plan.md").read_text()
    # planned for the full design (3 seeds) at the expected effect, from the pilot's variance components
    assert "| full>probe | > | 0.050 | expected |" in plan_md and "| 3 × 40 |" in plan_md
    assert main(["plan", str(finding)]) == 0  # from the committed pilot, without naming it
    printed = capsys.readouterr().out
    body = plan_md.split("\n\n", 1)[1]
    assert body.split("\n", 1)[1] == printed.split("\n", 1)[1].rstrip("\n") + "\n"  # the same table


@pytest.mark.parametrize("argv, message", [
    (["--part", "three"], "--part: 'three' is not a part of tiny_finding (parts: one, two)"),
    (["--part", "one", "--rejudge"], "--rejudge: re-judges the whole finding from its archive (without --part)"),
    (["--pilot", "--smoke"], "--pilot: runs the pilot variant; --smoke the smoke variant (one at a time)"),
])
def test_bad_part_and_pilot_flags_are_one_line(finding, capsys, argv, message):
    assert main(["reproduce", str(finding), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_parts_must_cover_every_study_once(finding, capsys):
    manifest = finding / "reproduce.yaml"
    raw = yaml.safe_load(manifest.read_text())
    raw["parts"] = {"one": ["fast.yaml"]}
    manifest.write_text(yaml.safe_dump(raw))
    assert main(["reproduce", str(finding), "--part", "one"]) == 2
    assert "parts: together they must list every study once" in capsys.readouterr().err


def test_the_verdict_line_counts_claims_only():
    def v(word):
        return Verdict("c", "s", ">", word, 0.0, 0.0, 0.0, 1.0, 3, "")
    assert finding_verdict([v("held"), v("held")]).startswith("**Verdict: reproduced**")
    assert finding_verdict([v("held"), v("failed")]).startswith("**Verdict: partly reproduced**")
    assert finding_verdict([v("failed"), v("inconclusive")]).startswith("**Verdict: not reproduced**")
    assert finding_verdict([v("inconclusive")]) == ("**Verdict: undecided** — of 1 claims at the paper's strength: "
                                                    "1 inconclusive.")


def test_the_archive_records_its_environment_and_a_run_on_other_versions_warns(finding, tmp_path, capsys):
    import numpy
    import torch

    results = finding / "results"
    assert main(["reproduce", str(finding), "--part", "two", "--out", str(tmp_path / "s")]) == 0
    assert "archived with other library versions" not in capsys.readouterr().err  # the same installation
    recorded = archive.Archive(results).environment("slow")
    assert recorded["torch"] == torch.__version__.split("+")[0] and recorded["numpy"] == numpy.__version__
    assert "wandb" not in recorded  # it cannot move a number

    # as if a later installation re-judged it: numpy and timm moved since the archive was made
    study = optuna.load_study(study_name="slow", storage=archive.Archive(results).storage)
    study.set_user_attr(archive.ENVIRONMENT, {**recorded, "numpy": "1.0.0", "timm": "0.1"})
    assert main(["reproduce", str(finding), "--rejudge"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlr: warning:"), err
    assert f"numpy 1.0.0 -> {numpy.__version__}" in err[0] and "timm 0.1 -> " in err[0] and "torch" not in err[0]
