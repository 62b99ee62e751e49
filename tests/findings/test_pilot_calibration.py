"""benchmarks/pilot_calibration.py on the committed archives: its planned powers are the committed plans', and the
committed results file is what the script writes."""

import re
import runpy
from pathlib import Path

import pytest

from tl_research.findings.claims import load_claims
from tl_research.findings.reproduce import list_findings, load_finding
from tl_research.reports import archive

BENCH = runpy.run_path("benchmarks/pilot_calibration.py")


def _plan_powers(plan_md: Path) -> dict[str, str]:
    """claim id -> the power column of a committed pilot/plan.md."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in plan_md.read_text().splitlines()
            if re.match(r"\| [a-z0-9]", line) and not line.startswith("| claim")]
    return {r[0]: r[6] for r in rows}


@pytest.mark.parametrize("name", ["ulmfit_tuned", "lp_ft_tuned"])
def test_the_planned_power_is_the_committed_plans(name):
    rows = BENCH["rows_of"](name)
    committed = _plan_powers(load_finding(name).folder / "pilot" / "plan.md")
    assert rows and {r["claim"] for r in rows} == set(committed)
    for r in rows:
        shown = "–" if r["planned"] is None else f"{r['planned']:.2f}"
        assert shown == committed[r["claim"]], r["claim"]
    verdicts = (load_finding(name).folder / "results" / "claims.md").read_text()
    for r in rows:  # and the verdict is the committed claims.md's
        assert re.search(rf"\| {re.escape(r['claim'])} \| [^|]+ \| \*\*{r['verdict']}\*\* \|", verdicts), r["claim"]


def test_every_finding_with_a_pilot_and_a_full_run_is_in_the_committed_file(tmp_path):
    assert BENCH["main"](["--out", str(tmp_path)]) == 0
    written = (tmp_path / "pilot_calibration.md").read_text()
    assert written == Path("benchmarks/results/pilot_calibration.md").read_text()
    both = [f for f in map(load_finding, list_findings())
            if (f.folder / "pilot" / archive.JOURNAL).is_file() and (f.folder / "results" / "claims.md").is_file()]
    expected = sum(len(load_claims(f.claims)[1]) for f in both)
    assert expected > 0 and written.count("\n| ") - 1 == expected  # one row per claim, below the header row
