"""Reproductions: every finding's smoke variant runs end to end (studies, reports, claim checks) on the real
weights and data, so the machinery cannot rot; the verdicts of a smoke run are not evidence (tiny data, 2 seeds)."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tl_research.cli.main import main
from tl_research.findings.claims import load_claims
from tl_research.findings.reproduce import list_findings, load_finding, specs, train_sources
from tl_research.studies.studyspec import load_study

FINDINGS = list_findings()
VERDICT = re.compile(r"^\*\*Verdict: ([a-z ]+)\.?\*\*", re.M)


def test_every_finding_is_complete():
    assert {"few_shot_crossing", "classic_recipe"} <= set(FINDINGS)
    for name in FINDINGS:
        finding = load_finding(name)
        _, claims = load_claims(finding.claims)
        assert claims and (finding.folder / "README.md").exists(), name


@pytest.mark.parametrize("name", FINDINGS)
def test_the_readme_opens_with_the_judged_verdict(name):
    """Each finding's README states its verdict, and where the committed claims.md judges the finding (claims at the
    paper's strength) it is that verdict, so the front page cannot drift from the judged file."""
    folder = load_finding(name).folder
    stated = VERDICT.search((folder / "README.md").read_text())
    assert stated, f"{name}: README has no verdict line"
    judged = folder / "results" / "claims.md"
    if not judged.is_file():
        assert stated.group(1) == "not yet run", name
    elif found := VERDICT.search(judged.read_text()):
        assert stated.group(1) == found.group(1), name
    else:  # a finding judged before verdicts were computed states one of the same words
        assert stated.group(1) in ("reproduced", "partly reproduced", "not reproduced", "undecided"), name


@pytest.mark.slow
@pytest.mark.parametrize("name", FINDINGS)
def test_smoke_variant_runs_and_checks_its_claims(tmp_path, capsys, name):
    code = main(["reproduce", name, "--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code in (0, 1), out  # 1: a claim failed at smoke scale, which is allowed; 2 would be an error
    finding = load_finding(name)
    _, claims = load_claims(finding.claims)
    checked = (tmp_path / "results" / "claims.md").read_text()
    for c in claims:
        assert f"| {c.id} |" in checked
    # every study of the finding has its own report (sources are finished by now: train_sources reuses them)
    for spec in specs(finding, "smoke", tmp_path, train_sources(finding, "smoke", tmp_path)):
        assert (tmp_path / "results" / spec.name / "results.md").is_file(), spec.name
    assert not any((finding.folder / "results").glob("*smoke*"))  # the committed results are untouched
    # the archive alone re-judges the finding to the same bytes: no storage, no run folders, no training
    judged = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*.md")}
    (tmp_path / "studies.db").unlink()
    shutil.rmtree(tmp_path / "runs")
    for p in judged:
        p.unlink()
    assert main(["reproduce", name, "--smoke", "--out", str(tmp_path), "--rejudge"]) == code
    assert {p: p.read_bytes() for p in (tmp_path / "results").rglob("*.md")} == judged


@pytest.mark.parametrize("path", sorted(Path("benchmarks/reproductions").glob("*/paper_scale.yaml")))
def test_the_paper_scale_settings_are_valid_studies(path):
    """Each v2 finding's "what it would take" YAML is a valid study (checked here on CPU, with the backbone that the
    offline machine has standing in for a hub-only one whose config it cannot read)."""
    sets = ["trainer.accelerator=cpu"]
    if "hf/" in path.read_text():  # a hub-only text encoder
        sets += ["backbone.name=hf/all-MiniLM-L6-v2", "backbone.weights=offline"]
    spec = load_study(path, sets)
    assert spec.config.kind == "tuned" and len(spec.arms) == 2
    assert yaml.safe_load(path.read_text())["study"]["seeds"] >= 5


def test_unknown_finding_is_one_line(capsys):
    assert main(["reproduce", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "finding: 'nosuch' is not a reproduction folder (known: " in err and err.count("\n") == 1


@pytest.mark.parametrize("manifest, message", [
    ("studies: 5", "studies: expected a non-empty list, got 5"),
    ("title: only", "studies: missing"),
    ("studies: [s.yaml]\nsmoke: {colour: 1}", "smoke.colour: unknown key"),
    ("studies: [s.yaml]\nsmoke: {seeds: many}", "smoke.seeds: expected an integer or a list or null"),
    ("studies: [s.yaml]\nsmoke: {seeds: 0}", "smoke.seeds: expected a count >= 1"),
    ("studies: [s.yaml]\npilot: {seeds: []}", "pilot.seeds: expected an integer or a list or null, got []"),
    ("studies: [s.yaml]\nparts: {a: [s.yaml], b: [s.yaml]}", "parts: together they must list every study once"),
    ("studies: [s.yaml]\nsources: {a: {experiment: s.yaml}}", "sources.a.feeds: missing"),
    ("studies: [s.yaml]\nsources: {a: {experiment: nope.yaml, feeds: [s.yaml]}}", "sources.a.experiment: "),
    ("studies: [nope.yaml]", "missing: "),
])
def test_a_malformed_reproduce_yaml_is_one_line(tmp_path, capsys, manifest, message):
    (tmp_path / "s.yaml").write_text("study: {name: s}\n")
    (tmp_path / "reproduce.yaml").write_text(manifest + "\n")
    assert main(["reproduce", str(tmp_path), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


ARCHIVED = [n for n in FINDINGS if (load_finding(n).folder / "results" / "studies.journal").is_file()]


@pytest.mark.parametrize("name", ARCHIVED)
def test_committed_verdicts_rejudge_byte_for_byte_from_the_committed_archive(tmp_path, name):
    """A re-run finding's committed tables and claims.md come back, byte for byte, from its committed archive alone
    (judged in a copy: the committed files are not touched)."""
    # the whole tree: a finding's sources may live in a sibling finding's folder
    shutil.copytree(load_finding(name).folder.parent, tmp_path / "reproductions")
    folder = tmp_path / "reproductions" / name
    committed = {p.relative_to(folder): p.read_bytes() for p in (folder / "results").rglob("*.md")}
    for p in committed:
        (folder / p).unlink()
    assert main(["reproduce", str(folder), "--rejudge"]) in (0, 1)  # 1: a claim failed, which is a result
    assert {p.relative_to(folder): p.read_bytes() for p in (folder / "results").rglob("*.md")} == committed


def test_a_full_runs_report_runs_go_to_the_run_folder_not_the_committed_results(tmp_path, monkeypatch):
    """The full run logs each study's report as a W&B summary run (its studies track offline); those files go under
    the run's folder, never inside the committed results/ (a copy of classic_recipe's archive, judged as the full
    run judges it)."""
    from tl_research.findings.reproduce import judge

    monkeypatch.setenv("WANDB_MODE", "offline")
    finding = load_finding("classic_recipe")
    results = tmp_path / "results"
    shutil.copytree(finding.folder / "results", results, ignore=shutil.ignore_patterns("wandb"))
    outcome = judge(finding, results, wandb_dir=tmp_path / "reports")
    assert [v.verdict for v in outcome.verdicts] == [v.verdict for v in judge(finding, results).verdicts]
    assert not list(results.rglob("wandb")) and not list(results.rglob("*.wandb"))
    for study in ("classic-recipe", "classic-catalogue", "classic-recipe-last"):
        assert list((tmp_path / "reports" / study / "wandb").glob("offline-run-*/run-*.wandb")), study
