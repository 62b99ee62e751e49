"""`tlr`: the command line. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from tl_research.errors import ConfigWarning, UserError

# commands that may load an HF model; listings skip importing transformers (~2 s) just to quiet it
MODEL_COMMANDS = {"fit", "study", "worker", "rank", "predict", "export", "quickstart", "reproduce", "inspect"}


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _quiet_libraries() -> None:
    """Process-wide noise control, set once at the CLI entry (the library itself sets no global state)."""
    # on 2 CPU cores with in-memory data, extra loader workers cost more than they save
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")  # short few-shot epochs
    # BN layers in eval mode at fit start are the BN policy at work, not an accident
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", ".*optimizer.step.*manual optimization.*")
    show = warnings.showwarning

    def one_line(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, ConfigWarning):
            print(f"tlr: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = one_line


def quiet_lightning() -> None:
    """Per-run Lightning chatter is noise in a study: one progress bar for the study instead."""
    import optuna

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


# ------------------------------------------------------------------ commands

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


def print_result(m: dict[str, Any]) -> None:
    keys = ["test/acc", "test/acc_top5", "test/f1_macro", "val/acc", "params/trainable", "params/total",
            "freeze/depth", "throughput/train_samples_per_sec", "throughput/infer_samples_per_sec", "memory/peak_mb"]
    keys += sorted(k for k in m if k.startswith("test_") and k.endswith("/acc"))  # shifted test sets
    print()
    print_table([[k, f"{m[k]:.4g}" if isinstance(m[k], float) else m[k]] for k in keys if k in m], ["metric", "value"])
    print(f"weights: {m['weights_source']}")
    print(f"run folder: {m['run_dir']}  (metrics.json, config.yaml, checkpoints/)")
    if "wandb_dir" in m:
        print(f"W&B run: {m['wandb_dir']}\n  upload it with: wandb sync {m['wandb_dir']}")


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


def study_with_progress(spec: Any, url: str, workers: int = 1) -> Any:
    """Run a study with one rich progress bar (trials done / total, best so far, ETA); prints where it runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tl_research.study import DONE, execute_study, mask_url, prepare_study, progress_line, total_trials

    quiet_lightning()
    study, queued = prepare_study(spec, url)
    print(f"study {spec.name} ({spec.config.kind}, {total_trials(spec)} trials) on {mask_url(url)}: "
          f"{queued} queued; {progress_line(study, spec)}", flush=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as bar:
        task = bar.add_task(spec.name, total=total_trials(spec), info="")

        def update(s: Any) -> None:
            bar.update(task, completed=len(s.get_trials(deepcopy=False, states=DONE)), info=progress_line(s, spec))

        update(study)
        folder = execute_study(study, spec, url, workers, update)
    if folder:
        print(f"W&B study table: wandb sync {folder}")
    return study


def cmd_study(args: argparse.Namespace) -> int:
    from tl_research.study import dashboard_arg, default_storage, mask_url, trial_rows
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
    from tl_research.study import load_existing, open_storage, work

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

def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tl_research")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _override_args(parser: argparse.ArgumentParser) -> None:
    """Config overrides as `--set key=value` and as bare `key=value` arguments (read by `_overrides`)."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a config key (like --set)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")


class _Parser(argparse.ArgumentParser):
    """A parser whose epilog may be a function, called only when help is shown (the key list imports the
    strategies, which listing commands must not pay for)."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def _keys_epilog() -> str:
    from tl_research.keydocs import keys_text

    return "config keys (KEY = default; [the strategies that take a freeze option]):\n" + keys_text()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tlr", description="Transfer-learning research: fit, inspect, list.")
    p.add_argument("--version", action="version", version=f"tlr {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    f = sub.add_parser("fit", help="one run -> DIR/metrics.json, DIR/config.yaml",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_keys_epilog)
    f.add_argument("config", help="experiment YAML")
    _override_args(f)
    f.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    f.add_argument("--out", help="run folder (default: output_dir/name/<time>)")
    f.add_argument("--restart", action="store_true",
                   help="start the run in --out over when its last checkpoint is damaged (kept aside)")
    f.set_defaults(func=cmd_fit)

    cf = sub.add_parser("config", help="print the resolved experiment YAML (defaults and overrides applied)")
    cf.add_argument("config", nargs="?", help="experiment YAML")
    cf.add_argument("--schema", action="store_true", help="print the JSON Schema of experiment YAMLs instead")
    cf.add_argument("--keys", action="store_true", help="print every key with its default and meaning (markdown)")
    _override_args(cf)
    cf.set_defaults(func=cmd_config)

    i = sub.add_parser("inspect", help="layer groups of a backbone: index, name, #params")
    i.add_argument("backbone", help="timm/<name> or hf/<id or folder>")
    i.add_argument("--coarse", action="store_true", help="timm: one group per stage instead of per block")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    b = sub.add_parser("backbones", help="backbones and their offline availability")
    b.add_argument("pattern", nargs="?", help="glob, e.g. 'timm/*resnet*'")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_backbones)

    d = sub.add_parser("datasets", help="datasets and their availability")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_datasets)

    s = sub.add_parser("study", help="grid or search study on an Optuna storage; re-run = resume")
    s.add_argument("config", help="study YAML (experiment + study section)")
    s.add_argument("--storage", help="sqlite:///…, postgresql+psycopg://…, or a journal file (*.log)")
    s.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in the base experiment")
    s.add_argument("--dry-run", action="store_true", help="print the cells it would run; touch no storage")
    s.set_defaults(func=cmd_study)

    w = sub.add_parser("worker", help="join a study from another process or machine")
    w.add_argument("--study", required=True)
    w.add_argument("--storage", required=True)
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("report", help="results.md / .csv / .tex + PNG plots of a study")
    r.add_argument("name", help="study name")
    r.add_argument("--storage", help="storage URL (default: sqlite:///runs/studies.db)")
    r.add_argument("--out", help="folder (default: runs/reports/NAME)")
    r.add_argument("--metric", default="test/acc")
    r.add_argument("--rows", help="parameter for the table rows (default: freeze.strategy, if swept)")
    r.add_argument("--cols", help="parameter for the columns (default: data.shots or freeze.depth, if swept)")
    r.add_argument("--baseline", help="row the paired tests compare against (default: linear_probe)")
    r.add_argument("--ci", choices=["bootstrap", "t"], default="bootstrap",
                   help="cell intervals: bootstrap over seeds and test examples (default), or Student-t (n >= 3)")
    r.add_argument("--target-width", type=float, default=0.02,
                   help="note cells whose interval is wider, with the seeds estimated for this width")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("check", help="judge a claims file on a study: held / failed / inconclusive (exit 1: failed)")
    c.add_argument("study", help="study name (claims may name their own with `study:`)")
    c.add_argument("claims", help="claims YAML")
    c.add_argument("--storage", help="storage URL (default: sqlite:///runs/studies.db)")
    c.add_argument("--out", help="also write the verdicts as markdown to this file")
    c.set_defaults(func=cmd_check)

    rp = sub.add_parser("reproduce", help="run a published finding's studies, reports and claim checks")
    rp.add_argument("finding", help="a folder under benchmarks/reproductions (or its path)")
    rp.add_argument("--smoke", action="store_true", help="the reduced variant (CI), into a scratch folder")
    rp.add_argument("--out", help="folder for the storage and runs (default: runs/reproductions/FINDING[-smoke])")
    rp.set_defaults(func=cmd_reproduce)

    rk = sub.add_parser("rank", help="score backbones x freeze depths from frozen features, before training")
    rk.add_argument("config", help="experiment YAML (dataset, preprocessing, weights)")
    rk.add_argument("--backbones", required=True, help="comma-separated, e.g. timm/mobilenetv2_100,hf/…")
    rk.add_argument("--depths", help="comma-separated freeze depths k (default: each backbone's full depth)")
    rk.add_argument("--per-class", type=int, default=50, help="training examples per class to score on")
    rk.add_argument("--by", default="logme", help="score to sort by: logme, leep, nce, h_score, knn, probe")
    rk.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    rk.add_argument("--out", help="folder for rank.md / rank.csv")
    rk.add_argument("--json", action="store_true")
    rk.set_defaults(func=cmd_rank)

    pr = sub.add_parser("predict", help="class probabilities of a trained run for new inputs -> CSV")
    pr.add_argument("run", help="a run folder (its best checkpoint) or a checkpoint file")
    pr.add_argument("input", help="an image folder, a .csv/.tsv of texts (the run's data.text_column), or an .npz")
    pr.add_argument("--out", help="CSV file (default: INPUT-predictions.csv beside the input)")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="a trained run as safetensors, a timm state dict, an HF folder, a PEFT adapter")
    ex.add_argument("run", help="a run folder (its best checkpoint) or a checkpoint file")
    ex.add_argument("--format", required=True, help="safetensors | timm | hf | peft")
    ex.add_argument("--out", help="folder (default: RUN/export/FORMAT)")
    ex.set_defaults(func=cmd_export)

    q = sub.add_parser("quickstart", help="the embedded-default main job, offline")
    q.add_argument("--out", default="runs/quickstart", help="folder for the runs")
    q.set_defaults(func=cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    if args.command in MODEL_COMMANDS:
        _quiet_transformers()
    try:
        code = args.func(args)
    except UserError as exc:
        print(f"tlr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tlr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tlr backbones | head`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
