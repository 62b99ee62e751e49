"""The `tlr` commands: each turns parsed arguments into a call of the library (cli.py holds the parser)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tl_research.console import print_result, print_table, quiet_lightning, study_with_progress
from tl_research.errors import UserError


def _overrides(args: argparse.Namespace) -> list[str]:
    """`--set key=value` and bare `key=value` arguments (as a W&B sweep agent or any launcher passes them)."""
    return [*args.set, *getattr(args, "overrides", [])]


def cmd_fit(args: argparse.Namespace) -> None:
    from tl_research.config import dump_yaml, load_experiment
    from tl_research.run import run

    exp = load_experiment(args.config, _overrides(args))
    if args.print_config:
        print(dump_yaml(exp), end="")
        return
    result = run(exp, args.out, restart=args.restart)
    if result.metrics:  # empty in the extra processes of a DDP run: rank 0 reports
        print_result(result.metrics)


def cmd_config(args: argparse.Namespace) -> None:
    from tl_research.config import dump_yaml, experiment_schema, load_experiment

    if args.schema:
        print(json.dumps(experiment_schema(), indent=2))
        return
    if args.keys:
        from tl_research.keydocs import keys_markdown

        print(keys_markdown(), end="")
        return
    if not args.config:
        raise UserError("config: name an experiment YAML (or pass --schema or --keys)")
    print(dump_yaml(load_experiment(args.config, _overrides(args))), end="")


def cmd_inspect(args: argparse.Namespace) -> None:
    from tl_research.backbones import inspect_backbone

    info = inspect_backbone(args.backbone, args.coarse)
    if args.json:
        print(json.dumps(info))
        return
    print(f"{info['backbone']}: {len(info['groups'])} layer groups, {info['num_params']:,} parameters "
          f"(freeze depth k freezes groups 0..k-1)")
    print_table([[g["index"], g["name"], f"{g['num_params']:,}"] for g in info["groups"]], ["index", "name", "params"])


def cmd_backbones(args: argparse.Namespace) -> None:
    from tl_research.backbones import list_backbones

    rows = list_backbones(args.pattern)
    if args.json:
        print(json.dumps(rows))
        return
    print_table([[r["name"], "yes" if r["available"] else "no", r.get("install", "")] for r in rows],
                 ["backbone", "offline", "install"])
    if not args.pattern:
        print("\nany timm model works with weights: hub or a local file; list them with: tlr backbones 'timm/*vit*'")


def cmd_datasets(args: argparse.Namespace) -> None:
    from tl_research.data import list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows))
        return
    print_table([[r["name"], r["modality"], "yes" if r["available"] else "no", r.get("install", r["description"])]
                  for r in rows], ["dataset", "modality", "available", "install / description"])


def cmd_study(args: argparse.Namespace) -> int:
    from tl_research.storage import dashboard_arg, default_storage, mask_url
    from tl_research.study import trial_rows
    from tl_research.studyspec import load_study

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
    from collections import Counter

    from optuna.trial import TrialState

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
    from tl_research.storage import open_storage
    from tl_research.study import load_existing, work

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
    from tl_research.report import run_report, to_markdown

    out = Path(args.out or Path("runs") / "reports" / args.name)
    table, files = run_report(args.name, args.storage or "sqlite:///runs/studies.db", out, args.metric, args.rows,
                              args.cols, args.baseline, args.ci, args.target_width)
    print(to_markdown(table, args.target_width))
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
    from tl_research.claims import check_claims, load_claims, to_markdown

    source, claims = load_claims(args.claims)
    verdicts = check_claims(claims, args.study, args.storage or "sqlite:///runs/studies.db")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(to_markdown(verdicts, source))
        print(f"wrote {args.out}")
    return _verdicts(verdicts)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from tl_research.reproduce import load_finding, reproduce

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
    from tl_research.config import load_experiment
    from tl_research.rank import ordered, rank, to_markdown
    from tl_research.report import write_csv
    from tl_research.tracking import log_summary_run

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
        print(to_markdown(found))
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "rank.md").write_text(to_markdown(found))
        write_csv(out / "rank.csv", rows)
    log_summary_run(exp, f"rank-{exp.data.name}", "rank", out or Path(exp.output_dir) / "rank",
                    lambda wandb: {"rank/candidates": wandb.Table(columns=list(rows[0]),
                                                                  data=[list(r.values()) for r in rows])})


def cmd_predict(args: argparse.Namespace) -> None:
    from tl_research.inference import load_run, predict, read_inputs, write_predictions

    loaded = load_run(args.run)
    ids, inputs = read_inputs(args.input, loaded)
    probs, rate = predict(loaded, inputs, args.batch_size)
    source = Path(args.input)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}-predictions.csv")
    write_predictions(out, ids, probs, loaded.classes)
    print(f"{len(ids)} inputs, {rate:.0f} samples/s -> {out}")


def cmd_export(args: argparse.Namespace) -> None:
    from tl_research.export import export
    from tl_research.inference import load_run

    loaded = load_run(args.run)
    out = Path(args.out) if args.out else Path(args.run) / "export" / args.format
    for f in export(loaded, args.format, out):
        print(f"wrote {f}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    import time

    from tl_research.quickstart import quickstart_spec
    from tl_research.report import run_report, to_markdown

    t0 = time.perf_counter()
    out = Path(args.out)
    spec, url = quickstart_spec(out)
    study_with_progress(spec, url)
    table, files = run_report(spec.name, url, out / "report")
    print("\nMobileNetV2 (ImageNet, offline weights) -> Animal-MNIST, test accuracy by examples per class\n")
    print(to_markdown(table))
    print(f"done in {time.perf_counter() - t0:.0f} s")
    print(f"tables and plots: {', '.join(str(f) for f in files)}")
    runs = sorted((out / "studies" / spec.name).glob("trial-*/wandb/offline-run-*"))
    if runs:
        print(f"W&B offline runs ({len(runs)}): wandb sync {out / 'studies' / spec.name}/trial-*/wandb/offline-run-*")
    print(f"study database: {url}  (tlr report {spec.name} --storage {url}; optuna-dashboard {url})")


# ------------------------------------------------------------------ parser

def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tl_research")
    except PackageNotFoundError:
        return "unknown (not installed)"
