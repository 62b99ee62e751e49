"""W&B tracking: one W&B run per `run()`, offline by default, files inside the run folder."""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import wandb
from lightning.pytorch.loggers import WandbLogger

from tl_research.adapters import wandb as wandb_files
from tl_research.config import Experiment
from tl_research.errors import UserError


def run_config(exp: Experiment, record: dict[str, Any]) -> dict[str, Any]:
    """The W&B config of a run: the resolved experiment plus its run record (record.py)."""
    return {**exp.to_dict(), **record}


def tracking_mode(exp: Experiment) -> str:
    """WANDB_MODE in the environment wins over the config (so a shell or CI can turn tracking off globally)."""
    return os.environ.get("WANDB_MODE", exp.tracking.mode)


def preflight(exp: Experiment, timeout: float = 3.0) -> None:
    """Fail fast, before anything is built, when `online` tracking cannot work (no credentials or no network):
    a run must never hang on W&B or lose its logs. `offline` and `disabled` need nothing."""
    if tracking_mode(exp) != "online":
        return

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
            key = auth[2] if auth else None
        except (OSError, netrc.NetrcParseError):
            key = None
    if not key:
        raise UserError("tracking.mode: online needs W&B credentials (wandb login, or WANDB_API_KEY); "
                        "or use tracking.mode=offline and `wandb sync` later")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        raise UserError(f"tracking.mode: online, but {host}:{port} cannot be reached; "
                        f"use tracking.mode=offline and `wandb sync` later") from None


def run_name(exp: Experiment) -> str:
    """Experiment name plus the settings that tell runs of one study apart."""
    f = exp.freeze
    k = getattr(f.options, "depth", None)
    depth = f"-d{k}" if k is not None else ""
    return f"{exp.name}-{f.strategy}{depth}-lr{exp.optim.lr:g}-s{exp.seed}"


@dataclass
class Tracker:
    logger: Any  # lightning WandbLogger, or None when tracking is disabled

    def log_confusion(self, labels: Any, preds: Any, classes: list[str]) -> None:
        """The test confusion matrix as W&B's confusion-matrix chart (a table of true x predicted counts)."""
        if self.logger is None:
            return

        chart = wandb.plot.confusion_matrix(y_true=[int(v) for v in labels], preds=[int(v) for v in preds],
                                            class_names=list(classes), title="test confusion matrix")
        self.logger.experiment.log({"test/confusion_matrix": chart})

    def finish(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """Close the W&B run (final metrics into its summary); returns what metrics.json should add."""
        if self.logger is None:
            return {}
        wb_run = self.logger.experiment
        if metrics is not None:
            flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            # per-class accuracies and other mappings: one summary key per entry
            flat.update({f"{k}/{name}": v for k, d in metrics.items() if isinstance(d, dict) for name, v in d.items()
                         if isinstance(v, (int, float))})
            wb_run.summary.update(flat)
        info = {"wandb_dir": str(Path(wb_run.dir).parent.resolve()), "wandb_run_id": wb_run.id}
        wb_run.finish(exit_code=0 if metrics is not None else 1)
        return info


RUN_ID = "wandb_run_id"  # the W&B run id of a run folder, so that a resumed run continues the same W&B run


def start_tracking(exp: Experiment, run_dir: Path, record: dict[str, Any], group: str | None = None,
                   label: str | None = None, cell: dict[str, Any] | None = None) -> Tracker:
    """One W&B run (files under `run_dir/wandb`): group = study (or experiment) name, job_type = the cell's phase
    (a tuned study's `tune` or `seed`) or `train`, tags = backbone, dataset, strategy (and phase); name = the
    experiment's name and `label`, a study cell's swept settings (else the settings that tell runs apart); `cell`
    joins the config. A run folder that already had a W&B run (a killed run, resumed) continues it."""
    mode = tracking_mode(exp)
    if mode == "disabled":
        return Tracker(None)

    id_file = run_dir / RUN_ID
    run_id = id_file.read_text().strip() if id_file.exists() else None
    cell = cell or {}
    name = f"{exp.name}[{label}]" if label else run_name(exp)
    phase = cell.get("phase")
    # the run is started here and handed to Lightning's logger (its public `experiment` argument): the logger's own
    # wandb.init passes `anonymous=None`, which wandb >= 0.19 answers with a warning on every run
    wb_run = wandb.init(name=name, project=os.environ.get("WANDB_PROJECT", exp.tracking.project),
                        entity=os.environ.get("WANDB_ENTITY", exp.tracking.entity), dir=str(run_dir),
                        group=group or exp.name, job_type=phase or "train", mode=mode,
                        tags=[exp.backbone.name, exp.data.name, exp.freeze.strategy, *([phase] if phase else [])],
                        config={**run_config(exp, record), **cell},
                        settings=_settings(), id=run_id, resume="allow" if run_id else None)
    logger = WandbLogger(experiment=wb_run, save_dir=str(run_dir),
                         log_model={"false": False, "best": True, "all": "all"}[exp.tracking.log_model])
    id_file.write_text(wb_run.id)
    wb_run.define_metric("val/acc", summary="max")
    wb_run.define_metric("val/loss", summary="min")
    return Tracker(logger)


def _settings() -> Any:
    # no console capture: Lightning's output stays in the terminal, and several runs in one process stay apart;
    # no pip list per run (parsing every installed package's metadata costs ~0.3 s a run): the config's
    # `versions` holds the packages that decide a result
    return wandb.Settings(console="off", silent=True, x_save_requirements=False)


def log_summary_run(exp: Experiment, group: str, job_type: str, save_dir: Path,
                    payload: Callable[[Any], dict[str, Any]]) -> str | None:
    """One W&B run of a study's group holding `payload(wandb)` (tables, images); returns its folder, or None when
    tracking is disabled. Used for the study's trials table and for reports."""
    mode = tracking_mode(exp)
    if mode == "disabled":
        return None

    save_dir.mkdir(parents=True, exist_ok=True)
    wb_run = wandb.init(project=os.environ.get("WANDB_PROJECT", exp.tracking.project),
                        entity=os.environ.get("WANDB_ENTITY", exp.tracking.entity), group=group,
                        job_type=job_type, name=f"{group}-{job_type}", dir=str(save_dir), mode=mode,
                        settings=_settings())
    try:
        wb_run.log(payload(wandb))
    finally:  # never leave a run open for the next one in this process to attach to
        wb_run.finish()
    return str(Path(wb_run.dir).parent.resolve())


def log_study_table(exp: Experiment, study_name: str, columns: list[str], rows: list[list[Any]],
                    save_dir: Path) -> str | None:
    """The study's trials as a W&B Table in a summary run of the study's group."""
    return log_summary_run(exp, study_name, "study-summary", save_dir,
                           lambda wandb: {"study/trials": wandb.Table(columns=columns, data=rows)})


def read_offline_run(folder: str | Path) -> dict[str, Any]:
    """An offline W&B run read back from its folder (`…/wandb/offline-run-*`, `metrics.json`'s `wandb_dir`):
    `{"config": {...}, "summary": {...}, "history": [row, ...], "run": the run record (name, group, job_type,
    tags)}` — no server, no account."""
    try:
        return wandb_files.decode(wandb_files.run_file(folder))
    except (ValueError, OSError) as exc:
        raise UserError(f"{folder}: cannot read the W&B run ({exc})") from None
