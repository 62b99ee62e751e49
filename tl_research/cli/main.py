"""`tlr`: the command line's parser and entry point. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from tl_research import plugins
from tl_research.cli.console import quiet_libraries, quiet_transformers
from tl_research.errors import UserError
from tl_research.redact import STORAGE_ENV, mask_url

# commands that may load an HF model; listings skip importing transformers (~2 s) just to quiet it
MODEL_COMMANDS = {"fit", "study", "worker", "rank", "predict", "export", "quickstart", "reproduce", "inspect"}
# the module of each command (listings.py, single_run.py, studies.py, findings.py), imported only when its command runs:
# listings and --help must not import torch, Lightning or Optuna (tests/cli/test_cli.py checks the modules loaded)
COMMAND_MODULES = {
    "fit": "single_run", "config": "single_run", "inspect": "single_run", "strategies": "single_run",
    "backbones": "listings", "datasets": "listings", "env": "environment",
    "study": "studies", "worker": "studies", "report": "studies", "check": "findings", "reproduce": "findings",
    "plan": "findings", "sync": "studies", "rank": "studies", "predict": "single_run", "export": "single_run",
    "quickstart": "studies"
}


def _count(least: int):
    """An argparse type: an integer >= `least` (argparse prints the one-line usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value
    return parse


def _share(text: str) -> float:
    """An argparse type: a number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def package_version() -> str:
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

    def error(self, message: str) -> NoReturn:
        # the one-line contract of every other bad input, with where to read more
        self.exit(2, f"tlr: error: {message} (see {self.prog} --help)\n")


def _keys_epilog() -> str:
    from tl_research.cli.keydocs import keys_text  # the strategies import torch: only fit --help pays

    return "config keys (KEY = default; [the strategies that take a freeze option]):\n" + keys_text()


def _scores_epilog() -> str:
    from tl_research.scores.registry import scores  # the scores import torch: only rank --help pays

    return "scores (--by): " + ", ".join(_named(s.name, s.fn.__module__) for s in scores())


def _named(name: str, module: str) -> str:
    """A registry entry as listings show it: its name, and the plugin it comes from (built-ins say nothing)."""
    where = plugins.origin(module)
    return name if where == "built-in" else f"{name} ({where})"


def _formats_epilog() -> str:
    from tl_research.lifecycle.export import formats  # the formats import torch and peft: only export --help pays

    return "formats:\n" + "\n".join(f"  {f.name:12} {f.help}" for f in formats())


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tlr", description="Transfer-learning research: fit, inspect, list.")
    p.add_argument("--version", action="version", version=f"tlr {package_version()}")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                   help=f"import a module or .py file that registers strategies, backbone families, datasets, scores "
                        f"or export formats (repeatable; also ${plugins.ENV} and the {plugins.GROUP} entry points)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    f = sub.add_parser("fit", help="one run -> a run folder (its config, metrics, predictions and checkpoints)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_keys_epilog)
    f.add_argument("config", help="experiment YAML")
    _override_args(f)
    f.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    f.add_argument("--out", help="run folder (default: output_dir/name/<time>)")
    f.add_argument("--restart", action="store_true",
                   help="start the run in --out over when its last checkpoint is damaged (kept aside)")

    cf = sub.add_parser("config", help="print the resolved experiment YAML (defaults and overrides applied)")
    cf.add_argument("config", nargs="?", help="experiment YAML")
    cf.add_argument("--schema", action="store_true", help="print the JSON Schema of experiment YAMLs instead")
    cf.add_argument("--keys", action="store_true", help="print every key with its default and meaning (markdown)")
    _override_args(cf)

    i = sub.add_parser("inspect", help="layer groups of a backbone: index, name, #params")
    i.add_argument("backbone", help="timm/<name> or hf/<id or folder>")
    i.add_argument("--coarse", action="store_true", help="timm: one group per stage instead of per block")
    i.add_argument("--json", action="store_true")

    b = sub.add_parser("backbones", help="backbones and their offline availability")
    b.add_argument("pattern", nargs="?", help="glob, e.g. 'timm/*resnet*'")
    b.add_argument("--json", action="store_true")

    d = sub.add_parser("datasets", help="datasets and their availability")
    d.add_argument("--json", action="store_true")

    e = sub.add_parser("env", help="library versions against the lock, devices, offline assets, cache folder "
                                   "(for bug reports)")
    e.add_argument("--json", action="store_true")

    s = sub.add_parser("study", help="grid or search study on an Optuna storage; re-run = resume")
    s.add_argument("config", help="study YAML (experiment + study section)")
    s.add_argument("--storage", help="sqlite:///…, postgresql+psycopg://…, or a journal file (*.log); "
                   f"default: ${STORAGE_ENV}, the study's `storage:`, or sqlite:///OUTPUT_DIR/studies.db")
    s.add_argument("--workers", type=_count(1), default=1,
                   help="worker processes on this machine (--launcher slurm: tasks of the worker job array)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in the base experiment")
    s.add_argument("--dry-run", action="store_true", help="print the cells it would run; touch no storage")
    s.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="slurm: queue the cells, submit a job array of --workers `tlr worker` tasks, and return")
    s.add_argument("--slurm-partition", help="sbatch --partition")
    s.add_argument("--slurm-time", help="sbatch --time per task (e.g. 4:00:00); a task stopped at its limit hands "
                   "its cell back and is requeued")
    s.add_argument("--slurm-gpus-per-worker", type=_count(0), help="sbatch --gpus-per-task")
    s.add_argument("--slurm-cpus-per-worker", type=_count(1), help="sbatch --cpus-per-task")
    s.add_argument("--slurm-extra", action="append", default=[], metavar="OPTION",
                   help="another sbatch option, e.g. --slurm-extra=--qos=low (repeatable)")
    s.add_argument("--slurm-shared-fs", action="store_true",
                   help="a SQLite/journal storage file is on a filesystem every node sees (else PostgreSQL)")

    w = sub.add_parser("worker", help="join a study from another process or machine")
    w.add_argument("--study", required=True)
    w.add_argument("--storage", help=f"the study's storage URL (default: ${STORAGE_ENV})")

    sy = sub.add_parser("sync", help="upload every W&B offline run of a study (wandb sync), wherever it ran")
    sy.add_argument("name", help="study name")
    sy.add_argument("--storage", help=f"storage URL (default: ${STORAGE_ENV}, else sqlite:///runs/studies.db)")
    sy.add_argument("--list", action="store_true", help="print the run folders (one per line) instead")

    r = sub.add_parser("report", help="results.md / .csv / .tex + PNG plots of a study")
    r.add_argument("name", help="study name")
    r.add_argument("--storage", help=f"storage URL (default: ${STORAGE_ENV}, else sqlite:///runs/studies.db)")
    r.add_argument("--out", help="folder (default: runs/reports/NAME)")
    r.add_argument("--metric", default="test/acc")
    r.add_argument("--rows", help="parameter for the table rows (default: freeze.strategy, if swept)")
    r.add_argument("--cols", help="parameter for the columns (default: data.shots or freeze.depth, if swept)")
    r.add_argument("--baseline", help="row the paired tests compare against (default: linear_probe)")
    r.add_argument("--target-width", type=_share, default=0.02,
                   help="note cells whose interval is wider, with the seeds estimated for this width")

    c = sub.add_parser("check", help="judge a claims file on a study: held / failed / inconclusive (exit 1: failed)")
    c.add_argument("study", help="study name (claims may name their own with `study:`)")
    c.add_argument("claims", help="claims YAML")
    c.add_argument("--storage", help=f"storage URL (default: ${STORAGE_ENV}, else sqlite:///runs/studies.db)")
    c.add_argument("--out", help="also write the verdicts as markdown to this file")

    st = sub.add_parser("strategies", help="the freezing strategies, each with its own freeze.* options")
    st.add_argument("--json", action="store_true")

    rp = sub.add_parser("reproduce", help="run a published finding's studies, reports and claim checks")
    rp.add_argument("finding", nargs="?",
                    help="a folder under benchmarks/reproductions (or its path); none: only with --preregistration, "
                         "which then checks every finding")
    rp.add_argument("--smoke", action="store_true", help="the reduced variant (CI), into a scratch folder")
    rp.add_argument("--out", help="folder for the storage and runs (default: runs/reproductions/FINDING[-smoke])")
    rp.add_argument("--rejudge", action="store_true",
                    help="no training: re-judge the claims and regenerate the tables from the committed results "
                         "archive (or, with --smoke, the smoke variant's)")
    rp.add_argument("--part", help="run only this part of a finding split into parts (reproduce.yaml `parts:`); "
                                   "it joins the committed archive beside the parts already run")
    rp.add_argument("--pilot", action="store_true",
                    help="run the pilot variant (reproduce.yaml `pilot:`) into the finding's pilot/ and write its "
                         "power plan (pilot/plan.md)")
    rp.add_argument("--workers", type=_count(1), default=1,
                    help="worker processes on this machine for each study (each computes on its share of the cores)")
    rp.add_argument("--preregistration", action="store_true",
                    help="no training: check from git history that the claims were fixed before the pilot and the "
                         "results and are unchanged since (exit 1 when not); without a finding, every finding")

    pl = sub.add_parser("plan", help="seeds and test examples each claim needs, from a pilot's variance components")
    pl.add_argument("claims", help="a finding (folder under benchmarks/reproductions) or a claims YAML")
    pl.add_argument("--pilot", help="a storage URL or a results archive folder (default for a finding: its committed "
                                    "results/)")
    pl.add_argument("--study", help="the study of claims that name none (claims YAML only)")
    pl.add_argument("--seeds", type=_count(2), help="planned seeds (default: the finding's studies', else the pilot's)")
    pl.add_argument("--test-size", type=_count(2), help="planned test examples (default: the pilot's)")

    rk = sub.add_parser("rank", help="score backbones x freeze depths from frozen features, before training",
                        epilog=_scores_epilog)
    rk.add_argument("config", help="experiment YAML (dataset, preprocessing, weights)")
    rk.add_argument("--backbones", required=True, help="comma-separated, e.g. timm/mobilenetv2_100,hf/…")
    rk.add_argument("--depths", help="comma-separated freeze depths k (default: each backbone's full depth)")
    rk.add_argument("--per-class", type=_count(2), default=50, help="training examples per class to score on")
    rk.add_argument("--by", default="logme", help="score to sort by (the registered scores: see below)")
    rk.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    rk.add_argument("--out", help="folder for rank.md / rank.csv")
    rk.add_argument("--json", action="store_true")

    pr = sub.add_parser("predict", help="class probabilities of a trained run for new inputs -> CSV")
    pr.add_argument("run", help="a run folder (the checkpoint its metrics report) or a checkpoint file")
    pr.add_argument("input", help="an image folder, a .csv/.tsv of texts (the run's data.text_column), or an .npz")
    pr.add_argument("--out", help="CSV file (default: INPUT-predictions.csv beside the input)")
    pr.add_argument("--batch-size", type=_count(1), default=64)
    pr.add_argument("--id-column", help="a CSV/TSV column that names each row in the output (default: a column "
                                        "`id` if there is one, else the text itself)")

    ex = sub.add_parser("export", help="a trained run as safetensors, a timm state dict, an HF folder, a PEFT adapter",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_formats_epilog)
    ex.add_argument("run", help="a run folder (the checkpoint its metrics report) or a checkpoint file")
    ex.add_argument("--format", required=True, help="one of the registered formats (see below)")
    ex.add_argument("--out", help="folder (default: RUN/export/FORMAT)")

    q = sub.add_parser("quickstart", help="the embedded-default main job, offline")
    q.add_argument("--out", default="runs/quickstart", help="folder for the runs")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the current trial or run stops at once (a run stays resumable from its last
    epoch, a study's cell goes back to the queue) and the process ends with 143."""


_TERMINATED = threading.Event()
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _terminate(signum: int, frame: object) -> None:
    _TERMINATED.set()  # Lightning catches the interrupt and exits with SystemExit(1): main tells them apart
    raise Terminated


def _storage_damage(exc: BaseException) -> bool:
    """An error of the database layer under a study storage (Optuna's, SQLAlchemy's or sqlite3's) that says the
    data is damaged, as opposed to a bug or a connection problem."""
    names = {(c.__module__.split(".")[0], c.__name__) for c in type(exc).__mro__}
    if names & {("sqlalchemy", "OperationalError"), ("sqlite3", "OperationalError")}:
        return False  # locked, unreachable: not damage
    return bool(names & {("optuna", "StorageInternalError"), ("sqlalchemy", "DatabaseError"),
                         ("sqlite3", "DatabaseError")})


def _plugins_named(argv: list[str]) -> list[str]:
    """The `--plugin` values before the command: imported before the parser runs, so that `--help` and the
    command's choices list their entries."""
    named, words = [], iter(argv)
    for word in words:
        if word == "--plugin":
            named.append(next(words, ""))
        elif word.startswith("--plugin="):
            named.append(word.partition("=")[2])
        elif not word.startswith("-"):
            break  # the command: what follows is its own
    return named


def main(argv: list[str] | None = None) -> int:
    try:
        plugins.load_entry_points()
        plugins.load_all(plugins.resolve(_plugins_named(sys.argv[1:] if argv is None else argv)), "--plugin")
    except UserError as exc:
        print(f"tlr: error: {exc}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed: a code, as every command returns
        return exc.code if isinstance(exc.code, int) else 0
    if hasattr(args, "storage") and not args.storage:
        args.storage = os.environ.get(STORAGE_ENV) or None
    if argv is None:
        # run.json and W&B record the command line: a password in a storage URL must reach neither
        sys.argv[1:] = [mask_url(a) for a in sys.argv[1:]]
    quiet_libraries()
    if args.command in MODEL_COMMANDS:
        quiet_transformers()
    # Lightning's own SIGTERM handler only stops a fit at the next batch and turns the stop into SystemExit, which
    # a study would take for a failed cell and go on; it calls this handler too
    handles = threading.current_thread() is threading.main_thread()
    # SIGUSR1 too: Slurm's warning before a time limit (`--signal=USR1@90`) stops a worker the same way
    previous = [signal.signal(sig, _terminate) for sig in STOP_SIGNALS] if handles else None
    _TERMINATED.clear()
    try:
        module = importlib.import_module(f"tl_research.cli.{COMMAND_MODULES[args.command]}")
        code = getattr(module, f"cmd_{args.command}")(args)
    except UserError as exc:
        print(f"tlr: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("tlr: terminated" if _TERMINATED.is_set() else "tlr: interrupted", file=sys.stderr)
        return 143 if _TERMINATED.is_set() else 130
    except SystemExit:
        if not _TERMINATED.is_set():
            raise
        print("tlr: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `tlr backbones | head`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if not _storage_damage(exc):
            raise
        # damage found while reading (a page in the middle of a SQLite file): opening the storage went fine
        where = f"the storage at {mask_url(args.storage)}" if getattr(args, "storage", None) else "the study storage"
        root: BaseException = exc
        while root.__cause__ is not None or root.__context__ is not None:  # Optuna wraps what the database said
            root = root.__cause__ or root.__context__
        first = (str(root).strip().splitlines() or [type(root).__name__])[0][:200]
        print(f"tlr: error: --storage: {where} is damaged ({first})", file=sys.stderr)
        return 2
    finally:
        if handles:
            for sig, handler in zip(STOP_SIGNALS, previous):
                signal.signal(sig, handler)
    return code or 0

