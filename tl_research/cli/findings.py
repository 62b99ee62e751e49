"""The `tlr` commands over findings: check (claims against a study), reproduce (a published finding's studies,
reports and claims) and plan (the seeds and test size the claims need)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tl_research import stats
from tl_research.cli.console import print_table
from tl_research.cli.progress import study_with_progress
from tl_research.errors import UserError
from tl_research.findings import power_plan, preregistration
from tl_research.findings.claims import check_file, file_markdown, load_claims, load_claims_file
from tl_research.findings.reproduce import default_pilot, judge, list_findings, load_finding, reproduce, results_folder
from tl_research.paths import writable_file, writable_folder
from tl_research.reports.archive import environment_drift


def _verdicts(verdicts: list[Any], failing: bool = True) -> int:
    """Print the verdicts; exit code 1 when a claim failed (and they are `failing`: checks are reported only)."""
    level = f"{100 * stats.bonferroni(len(verdicts)):.4g}%"  # the claims are one family
    print_table([[v.id, v.relation, v.verdict, f"{v.effect:+.3f} [{v.low:+.3f}, {v.high:+.3f}]", v.n]
                 for v in verdicts], ["claim", "relation", "verdict", f"effect [{level} CI]", "n"])
    failed = [v.id for v in verdicts if v.verdict == "failed"]
    if failed and failing:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed and failing else 0


def cmd_check(args: argparse.Namespace) -> int:
    parsed = load_claims_file(args.claims)
    out = writable_file(args.out, "--out") if args.out else None
    verdicts, checks = check_file(parsed, args.study, args.storage or "sqlite:///runs/studies.db")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(file_markdown(parsed, verdicts, checks))
        print(f"wrote {args.out}")
    return _report(verdicts, checks)


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.preregistration:
        return _preregistration(args)
    if args.finding is None:
        raise UserError(f"reproduce: name a finding (known: {', '.join(list_findings())}); only --preregistration "
                        "checks them all at once")
    finding = load_finding(args.finding)
    out = writable_folder(args.out, "--out") if args.out else None
    variant = "smoke" if args.smoke else "pilot" if args.pilot else "full"
    if args.smoke and args.pilot:
        raise UserError("--pilot: runs the pilot variant; --smoke the smoke variant (one at a time)")
    drift = environment_drift(results_folder(finding, variant, out))
    if drift:
        print(f"tlr: {drift}", file=sys.stderr)
    if args.rejudge:
        if args.pilot or args.part:
            flag = "--pilot" if args.pilot else "--part"
            raise UserError(f"--rejudge: re-judges the whole finding from its archive (without {flag})")
        outcome = judge(finding, results_folder(finding, variant, out))
    else:
        if variant == "full":  # say first whether its seeds and test size can decide its claims
            _plan_before(finding)
        outcome = reproduce(finding, variant, out, lambda spec, url: study_with_progress(spec, url, args.workers),
                            args.part)
    print(f"\n{finding.title}\n")
    for f in outcome.files:
        print(f"wrote {f}")
    if outcome.waiting:
        parts = f" (its other parts: --part {', '.join(finding.parts)})" if finding.parts else ""
        names = [f"{n} (stopped midway: {outcome.stopped[n]} trials complete)" if n in outcome.stopped else n
                 for n in outcome.waiting]
        print(f"\nthe claims wait for studies not yet in the archive: {', '.join(names)}{parts}")
        return 0
    if variant == "pilot":
        return 0
    return _report(outcome.verdicts, outcome.checks)


def _preregistration(args: argparse.Namespace) -> int:
    """One finding's pre-registration record, or (no finding named) every finding's as a table; exit 1 when one
    was not pre-registered."""
    others = [f for f, on in (("--smoke", args.smoke), ("--pilot", args.pilot), ("--part", args.part),
                              ("--rejudge", args.rejudge), ("--out", args.out)) if on]
    if others:
        raise UserError(f"--preregistration: reads the committed history only (without {', '.join(others)})")
    findings = [load_finding(n) for n in ([args.finding] if args.finding else list_findings())]
    records = [(f.name, preregistration.check(f.folder, f.claims)) for f in findings]
    if args.finding:
        print(preregistration.to_text(records[0][1]))
    else:
        print_table([[name, r.claims_fixed, r.claims_versions, r.pilot or "-", r.results or "-",
                      "no" if r.problems else "yes"] for name, r in records],
                    ["finding", "claims fixed in", "versions", "pilot first", "results first", "pre-registered"])
        for name, r in records:
            for problem in r.problems:
                print(f"{name}: {problem}")
    return 1 if any(r.problems for _, r in records) else 0


def _report(verdicts: list[Any], checks: list[Any]) -> int:
    """The checks (reported only), then the claims (exit code 1 when one failed)."""
    if checks:
        print("\nsanity checks (not reproduction evidence):")
        _verdicts(checks, failing=False)
        print("\nclaims:")
    return _verdicts(verdicts)


def _plan_before(finding: Any) -> None:
    """The plan from the finding's last full run, else from its committed pilot."""
    pilot = default_pilot(finding)
    if pilot is None:
        print(f"no power plan: no pilot yet (tlr reproduce {finding.name} --pilot, or tlr plan {finding.name} "
              f"--pilot <a storage with a few seeds>)\n")
        return
    needs = power_plan.plan_claims(load_claims(finding.claims)[1], pilot, power_plan.study_seeds(finding.studies))
    print(power_plan.to_markdown(needs, f"{'the last full run' if pilot.name == 'results' else 'the pilot'} ({pilot})"))
    below = [n.id for n in needs if power_plan.short(n)]
    if below:
        print(f"warning: the planned seeds / test size give less than {stats.POWER:.0%} power for: "
              f"{', '.join(below)}\n")


def cmd_plan(args: argparse.Namespace) -> None:
    as_finding = not args.claims.endswith((".yaml", ".yml"))
    if as_finding:
        finding = load_finding(args.claims)
        claims, pilot = load_claims(finding.claims)[1], args.pilot or default_pilot(finding)
        if pilot is None:
            raise UserError(f"--pilot: {finding.name} has no committed results or pilot yet; name a storage URL or a "
                            f"results archive (or run tlr reproduce {finding.name} --pilot)")
        seeds = power_plan.study_seeds(finding.studies)
    else:
        claims, pilot, seeds = load_claims(args.claims)[1], args.pilot, {}
        if pilot is None:
            raise UserError("--pilot: a claims file is planned from a pilot: a storage URL or a results archive")
    if args.seeds is not None:
        seeds = {name: args.seeds for name in {c.study or args.study for c in claims} | set(seeds)}
    needs = power_plan.plan_claims(claims, pilot, seeds, args.study, args.test_size)
    print(power_plan.to_markdown(needs, str(pilot)))
