"""The `tlr` commands over studies: study, worker, report, sync, rank, and the quickstart study.

Optuna, torch and Lightning are imported by each command once its study or experiment YAML is read: a config error
is answered in well under a second (tests/cli/test_cli.py checks that torch is not imported by then)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tl_research.cli.console import print_table
from tl_research.cli.main import STOP_SIGNALS
from tl_research.cli.quickstart import quickstart_spec
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.paths import writable_folder
from tl_research.redact import STORAGE_ENV, mask_url
from tl_research.studies.kinds import kind_of
from tl_research.studies.studyspec import grid_seeds, load_study


def cmd_study(args: argparse.Namespace) -> int:
    spec = load_study(args.config, args.set)  # everything is validated before the storage is touched
    writable_folder(spec.experiment.output_dir, "output_dir")
    from tl_research.cli.progress import study_with_progress
    from tl_research.pipeline import check_accelerator
    from tl_research.studies.storage import dashboard_arg, default_storage
    from tl_research.studies.study import total_trials, trial_rows

    check_accelerator(spec.experiment)
    if args.dry_run:
        print(f"study {spec.name} ({spec.config.kind}): {total_trials(spec)} trials")
        for cell in spec.cells:
            print("  " + ", ".join(f"{k}={v}" for k, v in cell.items()))
        for arm, keys in zip(spec.arms, spec.tuned):
            print("  arm " + ", ".join(f"{k}={v}" for k, v in arm.items()) + f": {spec.tune.trials} tuning trials "
                  f"over {', '.join(keys)}, then {len(grid_seeds(spec.config))} seed runs")
        return 0
    url = args.storage or spec.config.storage or default_storage(spec)
    if args.launcher == "slurm":
        return _submit_slurm(spec, url, args)
    study = study_with_progress(spec, url, args.workers)
    columns, rows = trial_rows(study, spec)
    print()
    print_table([[("" if c is None else f"{c:.4g}" if isinstance(c, float) else c) for c in r] for r in rows],
                columns)
    shown = mask_url(url)
    print(f"\nReport: tlr report {spec.name} --storage {shown}\nBrowse: optuna-dashboard {dashboard_arg(shown)}")
    return failure_summary(study)


def _submit_slurm(spec: Any, url: str, args: argparse.Namespace) -> int:
    """Queue the cells, submit the worker array, say how to follow it."""
    from tl_research.studies import slurm
    from tl_research.studies.study import prepare_study

    if not kind_of(spec).FIXED_CELLS:
        raise UserError(f"--launcher: slurm runs grid studies (this one is {spec.config.kind}: run `tlr study` "
                        f"on the cluster, or start `tlr worker` tasks yourself)")
    opts = slurm.SlurmOptions(args.workers, args.slurm_partition, args.slurm_time, args.slurm_gpus_per_worker,
                              args.slurm_cpus_per_worker, list(args.slurm_extra), args.slurm_shared_fs)
    slurm.check_storage(url, opts.shared_fs)
    _, queued = prepare_study(spec, url)
    folder = Path(spec.experiment.output_dir) / "studies" / spec.name / "slurm"
    job, path = slurm.submit(spec.name, url, opts, folder)
    shown = mask_url(url)
    print(f"study {spec.name}: {queued} cells queued in {shown}; Slurm job {job} ({opts.workers} worker tasks, "
          f"script {path})")
    print(f"Follow: squeue -j {job}   logs: {folder}/worker-{job}_*.out")
    print(f"Report: tlr report {spec.name} --storage {shown}")
    return 0


def failure_summary(study: Any) -> int:
    """Print why trials failed (grouped by message); exit code 1 when no trial completed."""
    from optuna.trial import TrialState

    from tl_research.studies.study import open_failures

    trials = study.get_trials(deepcopy=False)
    failures = open_failures(trials)
    retried = sum(t.state == TrialState.FAIL for t in trials) - len(failures)  # its cell was tried again later
    if retried:
        print(f"\n{retried} trial(s) retried (a stopped worker's or a failed try): each cell tried again later")
    failed = Counter(t.user_attrs.get("error", "its worker stopped (heartbeat went stale)") for t in failures)
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
    from tl_research.cli.progress import quiet_lightning
    from tl_research.studies import slurm
    from tl_research.studies.storage import open_storage
    from tl_research.studies.study import load_existing, work

    quiet_lightning()
    if not args.storage:
        raise UserError(f"--storage: which storage holds study {args.study!r}? (--storage URL or ${STORAGE_ENV})")
    study, spec = load_existing(args.study, open_storage(args.storage, must_exist=True), strict=True)
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
    try:
        n = work(study, spec, on_trial=finished)
    except (KeyboardInterrupt, SystemExit):
        # stopped by a signal (its cell is back in the queue): a Slurm task requeues itself while cells remain;
        # Slurm's own TERM for the requeue must not interrupt the exit
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if slurm.requeue_if_cells_remain(study):
            print(f"worker stopped: its cell is queued again; Slurm task {slurm.task_id()} requeued", flush=True)
        raise
    print(f"worker done: {n} trials")


def cmd_report(args: argparse.Namespace) -> None:
    out = writable_folder(args.out or Path("runs") / "reports" / args.name, "--out")
    from tl_research.reports.report import run_report

    _, files = run_report(args.name, args.storage or "sqlite:///runs/studies.db", out, args.metric, args.rows,
                          args.cols, args.baseline, args.target_width)
    print((out / "results.md").read_text())  # the table and, for a suite study, its means over tasks
    if out.joinpath("tuning.md") in files:  # a tuned study: how each arm's setting was chosen
        print(out.joinpath("tuning.md").read_text())
    for f in files:
        print(f"wrote {f}")


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload (or, with --list, print) the W&B offline runs of every trial of a study, wherever its storage says
    they are: one `wandb sync` for a study of any size."""
    url = args.storage or os.environ.get(STORAGE_ENV) or "sqlite:///runs/studies.db"
    from tl_research.studies.storage import open_storage
    from tl_research.studies.study import load_existing

    study, _ = load_existing(args.name, open_storage(url, must_exist=True), "sync")
    named = [Path(t.user_attrs["wandb_dir"]) for t in study.get_trials(deepcopy=False) if "wandb_dir" in t.user_attrs]
    here = [d for d in named if d.is_dir()]
    if len(here) < len(named):
        print(f"tlr: {len(named) - len(here)} of the study's {len(named)} W&B runs are not on this machine (their "
              f"trials ran elsewhere): run tlr sync there too", file=sys.stderr)
    if args.list:
        print("\n".join(str(d) for d in here))
        return 0
    if not here:
        raise UserError(f"sync: study {args.name!r} has no W&B offline run here (tracking.mode disabled?)")
    wandb_cli = Path(sys.executable).parent / "wandb"
    return subprocess.run([str(wandb_cli), "sync", *map(str, here)]).returncode


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
    out = writable_folder(args.out, "--out") if args.out else None
    from tl_research.reports.report import write_csv
    from tl_research.runtime.tracking import log_summary_run
    from tl_research.scores.rank import check_score, ordered, rank
    from tl_research.scores.rank import to_markdown as rank_markdown

    check_score(args.by)
    found = ordered(rank(exp, names, depths, args.per_class), args.by)
    rows = [c.row() for c in found]
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{exp.data.name}: {found[0].examples} training examples scored per candidate, best {args.by} first\n")
        print(rank_markdown(found))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "rank.md").write_text(rank_markdown(found))
        write_csv(out / "rank.csv", rows)
    log_summary_run(exp, f"rank-{exp.data.name}", "rank", out or Path(exp.output_dir) / "rank",
                    lambda wandb: {"rank/candidates": wandb.Table(columns=list(rows[0]),
                                                                  data=[list(r.values()) for r in rows])})


def cmd_quickstart(args: argparse.Namespace) -> None:


    t0 = time.perf_counter()
    out = writable_folder(args.out, "--out")
    from tl_research.cli.progress import study_with_progress
    from tl_research.reports.report import run_report
    from tl_research.reports.report import to_markdown as table_markdown

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
