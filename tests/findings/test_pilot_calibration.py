"""benchmarks/pilot_calibration.py on the committed archives: its planned powers are the committed plans', and the
committed results file is what the script writes."""

import re
import runpy
from pathlib import Path

import numpy as np
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


def test_a_planned_power_is_the_rejection_rate_of_its_design_simulated():
    """An independent check of `stats.power`: draw the planned design's (seeds x examples) difference matrices from
    the pilot's own variance components (x = effect + a_s + b_j + e_sj, Gaussian), judge each with the crossed
    interval at the claim's Bonferroni level, and count how often it lies wholly on the claimed side."""
    from scipy import stats as sps

    from tl_research import stats
    from tl_research.findings import power_plan

    finding = load_finding("lp_ft_tuned")
    claims = load_claims(finding.claims)[1]
    needs = power_plan.plan_claims(claims, finding.folder / "pilot", power_plan.study_seeds(finding.studies))
    confidence = stats.bonferroni(len(claims), stats.ALPHA)  # each claim's, in its family
    checked = [n for n in needs if n.power is not None and 0.15 < n.power < 0.95][:3]
    assert checked, [n.power for n in needs]
    rng = np.random.default_rng(0)
    reps = 400
    for need in checked:
        c, s, n, effect = need.components, need.seeds, need.examples, abs(need.effect)
        hits = 0
        for _ in range(reps):
            x = (effect + rng.normal(0, c.seed ** 0.5, (s, 1)) + rng.normal(0, c.example ** 0.5, (1, n))
                 + rng.normal(0, c.residual ** 0.5, (s, n)))
            mean, var, dof = stats.crossed_moments(x)
            hits += mean - sps.t.ppf(0.5 + confidence / 2, dof) * var ** 0.5 > 0
        rate, se = hits / reps, (need.power * (1 - need.power) / reps) ** 0.5
        assert abs(rate - need.power) < 4 * se + 0.03, (need.id, rate, need.power)
