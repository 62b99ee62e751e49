"""Reproductions: every finding's smoke variant runs end to end (studies, reports, claim checks) on the real
weights and data, so the machinery cannot rot; the verdicts of a smoke run are not evidence (tiny data, 2 seeds)."""

import pytest

from tl_research.cli.main import main
from tl_research.findings.claims import load_claims
from tl_research.findings.reproduce import list_findings, load_finding

FINDINGS = list_findings()


def test_every_finding_is_complete():
    assert {"few_shot_crossing", "classic_recipe"} <= set(FINDINGS)
    for name in FINDINGS:
        finding = load_finding(name)
        _, claims = load_claims(finding.claims)
        assert claims and (finding.folder / "README.md").exists(), name


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
        assert f"| {c['id']} |" in checked
    for spec_path in finding.studies:
        assert any((tmp_path / "results").glob("*/results.md")), spec_path
    assert not any((finding.folder / "results").glob("*smoke*"))  # the committed results are untouched


def test_unknown_finding_is_one_line(capsys):
    assert main(["reproduce", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "finding: 'nosuch' is not a reproduction folder (known: " in err and err.count("\n") == 1
