"""Pre-registration from git history: built up commit by commit in a scratch repository (each rule can fail), then
checked on every committed finding of this repository."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tl_research.cli.main import main
from tl_research.errors import UserError
from tl_research.findings.preregistration import check
from tl_research.findings.reproduce import list_findings, load_finding

CLAIMS = "claims:\n  - id: a-beats-b\n    a: {x: 1}\n    relation: '>'\n    b: {x: 0}\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def _commit(repo: Path, message: str, files: dict[str, str] | None = None) -> str:
    for name, text in (files or {}).items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", message], check=True, env=env)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def test_claims_before_pilot_and_results_with_a_later_header_comment_are_preregistered(repo):
    fixed = _commit(repo, "claims", {"f/claims.yaml": CLAIMS})
    pilot = _commit(repo, "pilot", {"f/pilot/plan.md": "plan"})
    header = _commit(repo, "design header", {"f/claims.yaml": "# design: 5 seeds, from the pilot\n" + CLAIMS})
    results = _commit(repo, "results", {"f/results/claims.md": "held"})
    folder = repo / "f"
    record = check(folder, folder / "claims.yaml")
    assert record.problems == []
    assert (record.claims_fixed.sha, record.claims_versions, record.file_last.sha) == (fixed, 1, header)
    assert (record.pilot.sha, record.results.sha) == (pilot, results)


def test_a_claim_changed_after_the_results_is_reported(repo):
    _commit(repo, "claims", {"f/claims.yaml": CLAIMS})
    results = _commit(repo, "results", {"f/results/claims.md": "failed"})
    changed = _commit(repo, "fit the claim", {"f/claims.yaml": CLAIMS.replace("'>'", "'<'")})
    folder = repo / "f"
    record = check(folder, folder / "claims.yaml")
    assert record.claims_versions == 2 and record.claims_fixed.sha == changed
    assert any(changed[:7] in p and results[:7] in p and "results" in p for p in record.problems)


def test_a_comment_after_the_results_or_an_uncommitted_edit_is_reported(repo):
    _commit(repo, "claims", {"f/claims.yaml": CLAIMS})
    _commit(repo, "results", {"f/results/claims.md": "held"})
    folder = repo / "f"
    assert check(folder, folder / "claims.yaml").problems == []
    late = _commit(repo, "a header after the results", {"f/claims.yaml": "# reads the results\n" + CLAIMS})
    record = check(folder, folder / "claims.yaml")
    assert record.claims_versions == 1 and len(record.problems) == 1 and late[:7] in record.problems[0]
    (folder / "claims.yaml").write_text(CLAIMS.replace("x: 1", "x: 2"))
    assert any("working tree" in p for p in check(folder, folder / "claims.yaml").problems)
    (folder / "claims.yaml").write_text(CLAIMS + "  - id: [unclosed\n")  # half-edited: does not parse
    assert any("working tree" in p for p in check(folder, folder / "claims.yaml").problems)


def test_claims_committed_with_their_results_or_after_the_pilot_are_not_preregistered(repo):
    _commit(repo, "pilot first", {"f/pilot/plan.md": "plan"})
    _commit(repo, "claims and results at once", {"f/claims.yaml": CLAIMS, "f/results/claims.md": "held"})
    folder = repo / "f"
    problems = check(folder, folder / "claims.yaml").problems
    assert len(problems) == 2 and "pilot" in problems[0] and "results" in problems[1]


def test_a_moved_finding_keeps_its_history(repo):
    fixed = _commit(repo, "claims", {"f/claims.yaml": CLAIMS})
    _commit(repo, "results", {"f/results/claims.md": "held"})
    subprocess.run(["git", "-C", str(repo), "mv", "f", "g"], check=True)
    _commit(repo, "move the finding")
    folder = repo / "g"
    record = check(folder, folder / "claims.yaml")
    assert record.claims_fixed.sha == fixed and record.problems == []


def test_claims_copied_from_another_finding_start_their_own_history(repo):
    """A second finding's claims written from the first's file are new claims: the first finding's results,
    committed before them, are not theirs (git log --follow walks on through a copy)."""
    _commit(repo, "first finding", {"f/claims.yaml": CLAIMS})
    _commit(repo, "its results", {"f/results/claims.md": "held"})
    copied = _commit(repo, "a second finding from the first's claims",
                     {"g/claims.yaml": CLAIMS.replace("a-beats-b", "a-beats-b-on-g")})
    _commit(repo, "its results", {"g/results/claims.md": "held"})
    folder = repo / "g"
    record = check(folder, folder / "claims.yaml")
    assert record.claims_fixed.sha == copied and record.problems == []


def test_outside_a_git_checkout_the_check_is_a_one_line_error(tmp_path):
    (tmp_path / "claims.yaml").write_text(CLAIMS)
    with pytest.raises(UserError, match="git"):
        check(tmp_path, tmp_path / "claims.yaml")


@pytest.mark.parametrize("name", list_findings())
def test_every_committed_finding_was_preregistered(name):
    """This repository's own history: every finding's claims precede its pilot and its results, unchanged since."""
    finding = load_finding(name)
    record = check(finding.folder, finding.claims)
    assert record.problems == [], record.problems
    assert record.results is not None, f"{name}: no committed results"


def test_the_cli_prints_the_record_and_refuses_other_modes(capsys, tmp_path):
    assert main(["reproduce", "ulmfit_tuned", "--preregistration"]) == 0
    assert "pre-registered: the claims come before the pilot and the results" in capsys.readouterr().out
    assert main(["reproduce", "ulmfit_tuned", "--preregistration", "--rejudge"]) == 2
    assert "--preregistration" in capsys.readouterr().err
    assert main(["reproduce", "--preregistration"]) == 0  # every finding, one row each
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(r[0] for r in rows) == sorted(list_findings()) and {r[-1] for r in rows} == {"yes"}
    assert main(["reproduce"]) == 2  # no finding named: one line naming them
    assert "name a finding" in capsys.readouterr().err
    copy = shutil.copytree(load_finding("ulmfit_tuned").folder, tmp_path / "ulmfit_tuned",
                           ignore=shutil.ignore_patterns("results"))
    assert main(["reproduce", str(copy), "--preregistration"]) == 2  # not in a git checkout
    assert "not a git repository" in capsys.readouterr().err
