"""How well did each finding's pilot predict its full run? From the committed archives alone (no training).

A power plan (`tlr plan`, pilot/plan.md) estimates each claim's variance components — seed-to-seed, per test
example, residual — from a pilot of a few seeds, and from them the power of the full run's design. Each finding with
a committed pilot and full run shows here, per claim, the pilot's components beside the full run's, the power the
plan gave, the power the same plan gets from the full run's components (the same expected effect and design: what
the plan would have said had it known the variances), and the full run's verdict. Post hoc by construction: a
description of the pilots, not a claim of any finding.

    python benchmarks/pilot_calibration.py            # -> benchmarks/results/pilot_calibration.md
    python benchmarks/pilot_calibration.py --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import median

from tl_research import stats
from tl_research.findings import power_plan
from tl_research.findings.claims import check_claims, load_claims
from tl_research.findings.reproduce import list_findings, load_finding
from tl_research.reports import archive


def rows_of(name: str) -> list[dict]:
    """One row per claim of finding `name` (none when it has no committed pilot or no full run)."""
    finding = load_finding(name)
    pilot, full = finding.folder / "pilot", finding.folder / "results"
    if not (pilot / archive.JOURNAL).is_file() or not (full / "claims.md").is_file():
        return []
    _, claims = load_claims(finding.claims)
    seeds = power_plan.study_seeds(finding.studies)
    planned = power_plan.plan_claims(claims, pilot, seeds)
    storage, lookups = power_plan.open_pilot(full)
    verdicts = check_claims(claims, None, storage, lookups)
    known = power_plan.plan(claims, verdicts, seeds, examples=planned[0].examples if planned else None)
    return [{"finding": name, "claim": p.id, "pilot": p.components, "full": k.components, "planned": p.power,
             "known": k.power, "verdict": v.verdict} for p, k, v in zip(planned, known, verdicts)]


def _sd(c: stats.Components | None, part: str) -> float | None:
    return None if c is None else getattr(c, part) ** 0.5


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def to_markdown(rows: list[dict]) -> str:
    lines = ["# Pilots against their full runs", "",
             "Command: `python benchmarks/pilot_calibration.py` (the committed pilot/ and results/ archives; post "
             "hoc: a description of the pilots, not a claim). Per claim: standard deviations of the paired "
             "difference's seed and residual components (pilot → full run), the power the pilot's plan gave the full "
             f"design, the power the same plan gets from the full run's components (same expected effect, seeds, "
             f"test size; {stats.POWER:.0%} is the target), and the full run's verdict.", "",
             "| finding | claim | seed sd: pilot → full | residual sd: pilot → full | power: planned → with the full "
             "run's variances | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['finding']} | {r['claim']} | {_fmt(_sd(r['pilot'], 'seed'))} → "
                     f"{_fmt(_sd(r['full'], 'seed'))} | {_fmt(_sd(r['pilot'], 'residual'))} → "
                     f"{_fmt(_sd(r['full'], 'residual'))} | {_fmt(r['planned'], '.2f')} → {_fmt(r['known'], '.2f')} "
                     f"| {r['verdict']} |")
    both = [r for r in rows if r["pilot"] is not None and r["full"] is not None]
    ratios = [_sd(r["full"], "seed") / _sd(r["pilot"], "seed") for r in both if r["pilot"].seed > 0]
    powered = [r for r in rows if r["planned"] is not None and r["planned"] >= stats.POWER]
    rest = [r for r in rows if r["planned"] is not None and r["planned"] < stats.POWER]
    decided = lambda rs: sum(r["verdict"] != "inconclusive" for r in rs)  # noqa: E731
    # a powered claim left undecided: the variances were underestimated (the full run's give it < target), or the
    # effect fell short of the expected one (they still give it the target)
    missed = [r for r in powered if r["verdict"] == "inconclusive"]
    short = sum(r["known"] is not None and r["known"] < stats.POWER for r in missed)
    lines += ["", f"Claims: {len(rows)} in {len({r['finding'] for r in rows})} findings. Seed sd larger in the full "
              f"run than in its pilot: {sum(_sd(r['full'], 'seed') > _sd(r['pilot'], 'seed') for r in both)} of "
              f"{len(both)}; median ratio full / pilot {_fmt(median(ratios) if ratios else None, '.2f')} (over the "
              f"{len(ratios)} claims whose pilot seed sd is above 0). Planned at ≥ {stats.POWER:.0%} power: "
              f"{len(powered)}, of which {decided(powered)} were decided (held or failed); of the {len(missed)} left "
              f"undecided, {short} fall below {stats.POWER:.0%} with the full run's variances (the pilot "
              f"underestimated them) and {len(missed) - short} do not (the effect fell short of the expected one). "
              f"Planned below {stats.POWER:.0%}: {len(rest)}, of which {decided(rest)} were decided."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for pilot_calibration.md")
    args = parser.parse_args(argv)
    rows = [r for name in list_findings() for r in rows_of(name)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pilot_calibration.md").write_text(to_markdown(rows))
    print(f"wrote {out / 'pilot_calibration.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
