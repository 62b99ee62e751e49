"""The `tlr` commands over studies: study, worker, report, check, reproduce, rank, and the quickstart study."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from tl_research.cli.console import print_table
from tl_research.cli.progress import quiet_lightning, study_with_progress
from tl_research.cli.quickstart import quickstart_spec
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.findings.claims import check_claims, load_claims
from tl_research.findings.claims import to_markdown as claims_markdown
from tl_research.findings.reproduce import load_finding, reproduce
from tl_research.redact import mask_url
from tl_research.reports.report import run_report, write_csv
from tl_research.reports.report import to_markdown as table_markdown
from tl_research.runs.tracking import log_summary_run
from tl_research.scores.rank import ordered, rank
from tl_research.scores.rank import to_markdown as rank_markdown
from tl_research.studies.storage import dashboard_arg, default_storage, open_storage
from tl_research.studies.study import load_existing, trial_rows, work
from tl_research.studies.studyspec import load_study


def cmd_study(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise UserError(f"--workers: {args.workers} (at least 1)")
    spec = load_study(args.config, args.set)  # everything is validated before the storage is touched
    if args.dry_run:
        print(f"study {spec.name} ({spec.config.kind}): {len(spec.cells) or spec.config.n_trials} trials")
        for cell in spec.cells:
            print("  " + ", ".join(f"{k}={v}" for k, v in cell.items()))
        return 0
    url = args.storage or spec.config.storage or default_storage(spec)
    study = study_with_progress(spec, url, args.workers)
    columns, rows = trial_rows(study, spec)
    print()
    print_table([[("" if c is None else f"{c:.4g}" if isinstance(c, float) else c) for c in r] for r in rows],
                columns)
    shown = mask_url(url)
    print(f"\nReport: tlr report {spec.name} --storage {shown}\nBrowse: optuna-dashboard {dashboard_arg(shown)}")
    return failure_summary(study)


def failure_summary(study: Any) -> int:
    """Print why trials failed (grouped by message); exit code 1 when no trial completed."""


    trials = study.get_trials(deepcopy=False)
    failed = Counter(t.user_attrs.get("error", "no message") for t in trials if t.state == TrialState.FAIL)
    if not failed:
        return 0
    print(f"\n{sum(failed.values())} trial(s) failed:")
    for message, count in failed.most_common():
        print(f"  {count} x {message}")
    if not any(t.state == TrialState.COMPLETE for t in trials):
        print("no trial completed", file=sys.stderr)
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> None:
    quiet_lightning()
    study, spec = load_existing(args.study, open_storage(args.storage, must_exist=True))
    seen: set[int] = set()

    def finished(s: Any) -> None:  # one line per trial this worker saw finish
        for t in s.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                value = t.user_attrs.get("val/acc")
                print(f"trial {t.number} {t.state.name.lower()}: {t.params}"
                      + (f" val/acc={value:.4f}" if isinstance(value, float) else
                         f" ({t.user_attrs.get('error', '')})" if t.state.name == "FAIL" else ""), flush=True)

    seen.update(t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    n = work(study, spec, on_trial=finished)
    print(f"worker done: {n} trials")


def cmd_report(args: argparse.Namespace) -> None:
    out = Path(args.out or Path("runs") / "reports" / args.name)
    table, files = run_report(args.name, args.storage or "sqlite:///runs/studies.db", out, args.metric, args.rows,
                              args.cols, args.baseline, args.ci, args.target_width)
    print(table_markdown(table, args.target_width))
    for f in files:
        print(f"wrote {f}")


def _verdicts(verdicts: list[Any]) -> int:
    """Print the verdicts; exit code 1 when a claim failed."""
    print_table([[v.id, v.relation, v.verdict, f"{v.effect:+.3f} [{v.low:+.3f}, {v.high:+.3f}]", v.n]
                 for v in verdicts], ["claim", "relation", "verdict", "effect [95% CI]", "n"])
    failed = [v.id for v in verdicts if v.verdict == "failed"]
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    source, claims = load_claims(args.claims)
    verdicts = check_claims(claims, args.study, args.storage or "sqlite:///runs/studies.db")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(claims_markdown(verdicts, source))
        print(f"wrote {args.out}")
    return _verdicts(verdicts)


def cmd_reproduce(args: argparse.Namespace) -> int:
    finding = load_finding(args.finding)
    verdicts, files = reproduce(finding, args.smoke, Path(args.out) if args.out else None,
                                lambda spec, url: study_with_progress(spec, url))
    print(f"\n{finding.title}\n")
    for f in files:
        print(f"wrote {f}")
    return _verdicts(verdicts)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def cmd_rank(args: argparse.Namespace) -> None:
    exp = load_experiment(args.config, args.set)
    names = [b.strip() for b in args.backbones.split(",") if b.strip()]
    if not names:
        raise UserError("--backbones: name at least one backbone")
    depths = _int_list(args.depths, "--depths") if args.depths else None
    found = ordered(rank(exp, names, depths, args.per_class), args.by)
    rows = [c.row() for c in found]
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{exp.data.name}: {found[0].examples} training examples scored per candidate, best {args.by} first\n")
        print(rank_markdown(found))
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "rank.md").write_text(rank_markdown(found))
        write_csv(out / "rank.csv", rows)
    log_summary_run(exp, f"rank-{exp.data.name}", "rank", out or Path(exp.output_dir) / "rank",
                    lambda wandb: {"rank/candidates": wandb.Table(columns=list(rows[0]),
                                                                  data=[list(r.values()) for r in rows])})


def cmd_quickstart(args: argparse.Namespace) -> None:


    t0 = time.perf_counter()
    out = Path(args.out)
    spec, url = quickstart_spec(out)
    study_with_progress(spec, url)
    table, files = run_report(spec.name, url, out / "report")
    print("\nMobileNetV2 (ImageNet, offline weights) -> Animal-MNIST, test accuracy by examples per class\n")
    print(table_markdown(table))
    print(f"done in {time.perf_counter() - t0:.0f} s")
    print(f"tables and plots: {', '.join(str(f) for f in files)}")
    runs = sorted((out / "studies" / spec.name).glob("trial-*/wandb/offline-run-*"))
    if runs:
        print(f"W&B offline runs ({len(runs)}): wandb sync {out / 'studies' / spec.name}/trial-*/wandb/offline-run-*")
    print(f"study database: {url}  (tlr report {spec.name} --storage {url}; optuna-dashboard {url})")
