"""`run(experiment)`: the one call path for the CLI, studies, tests and notebooks.

Build order: backbone -> strategy (resolved against the backbone's groups) -> data -> module. The data step is where
the feature cache plugs in: when the first k groups stay frozen for the whole run, the data module serves cached
prefix outputs and the module trains `head(suffix(x))`; otherwise it serves raw inputs. Callers see no difference.

May import: the base, backbones, cache, data, strategies, training, runtime, config.
"""

from __future__ import annotations

import errno
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from tl_research.backbones import Backbone, build_backbone
from tl_research.backbones.base import reinit_groups, weights_digest
from tl_research.backbones.from_run import load_run_head
from tl_research.cache.feature_plan import plan_features
from tl_research.cache.features import CacheReport, FeatureCollate, cached_datamodule, cached_rows
from tl_research.config import Experiment, dump_yaml
from tl_research.data.datamodule import ImageCollate, TransferDataModule, load_data, raw_datamodule, select
from tl_research.data.shifts import MEAN_METRIC, evaluate_shifts, parse_shift, parse_shifts
from tl_research.errors import UserError
from tl_research.run_folder import (
    BEST,
    CHECKPOINTS,
    LAST,
    SHIFTED_PREDICTIONS,
    checkpoint,
    choose,
    finish,
    identity,
    new_attempt,
    new_folder,
    start,
    write_npz,
    write_predictions,
)
from tl_research.runtime.distributed import (
    check_distributed,
    fit_trainer,
    global_rank,
    leave_group,
    run_dir_for,
    share_run_dir,
    testing_trainer,
    wait_for_launched,
    world_size,
)
from tl_research.runtime.record import AT_CHANCE, run_record
from tl_research.runtime.tracking import Tracker, preflight, start_tracking
from tl_research.stats import at_chance
from tl_research.strategies import ProbePhase, Strategy, after_run, frozen_prefix, probe_phase, resolved
from tl_research.training.callbacks import Throughput, peak_memory_mb, reset_peak_memory
from tl_research.training.heads import build_head
from tl_research.training.module import TransferModule
from tl_research.training.probe import fit_probe
from tl_research.training.regularizers.registry import groups_read


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def check_accelerator(exp: Experiment) -> None:
    """The requested device exists (Lightning would fail deep inside with a traceback otherwise)."""
    acc = exp.trainer.accelerator
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator: {acc} requested but no CUDA device is visible (use auto or cpu)")
    if acc == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.accelerator: mps requested but this machine has no Apple GPU (use auto or cpu)")
    if acc in ("gpu", "cuda") and exp.trainer.devices > torch.cuda.device_count():
        raise UserError(f"trainer.devices: {exp.trainer.devices} requested, {torch.cuda.device_count()} visible")
    on_cuda = acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())
    if exp.trainer.precision == "16-mixed" and not on_cuda:
        # Lightning would fall back to another precision without a word, and the run record would say 16-mixed
        raise UserError("trainer.precision: 16-mixed needs a CUDA device and this run has none (use 32-true, or "
                        "bf16-mixed, which CPUs run)")


def build_backbone_from(exp: Experiment) -> Backbone:
    b = exp.backbone
    options = b.family_kwargs()
    backbone = build_backbone(b.name, b.weights, **options)
    if b.keep_groups is not None:
        # the new upper groups are what a from-scratch backbone would start with (drawn from the run's seed)
        reinit_groups(backbone, build_backbone(b.name, "none", **options), b.keep_groups)
    return backbone


def build_strategy_from(exp: Experiment, backbone: Backbone) -> Strategy:
    """The experiment's strategy, checked against this backbone's groups (the one place depth bounds are checked)."""
    return resolved(exp.freeze.options, len(backbone.layer_groups()), exp.optim.lr)


@dataclass
class RunData:
    """The data step's result: the data module, the split the suffix runs on (None: raw inputs), the cache's
    report, and the probe phase's features (rows of the whole frozen backbone, when the L-BFGS probe fits)."""

    data: TransferDataModule
    suffix: Any
    cache: Any
    probe: str  # the probe phase's solver: lbfgs | sgd | none
    weights: str  # digest of the backbone's weights as loaded
    raw: Any = None  # the pool of raw inputs (shifted test sets are made from it)
    prefix: Any = None  # the frozen prefix the cached rows came from (None: raw inputs)
    probe_rows: Any = None  # cached rows of the whole backbone (lbfgs only)
    probe_split: Any = None  # the backbone split those rows came from
    probe_report: Any = None  # the cache's report on them


def build_data_from(exp: Experiment, backbone: Backbone, strategy: Strategy, scratch: Path) -> RunData:
    """Raw inputs, or cached outputs of the frozen prefix (the feature-cache slot), and the features a probe phase
    fits on."""
    raw = load_data(exp.data, backbone.modality)
    parse_shifts(exp.data.eval_shifts)  # bad shifts fail before training
    if exp.data.shift:
        parse_shift(exp.data.shift, "data.shift")
        if exp.data.eval_shifts:
            raise UserError("data.eval_shifts: cannot be combined with data.shift (the test split is already shifted)")
    split, info = select(raw, exp.data)
    n = len(backbone.layer_groups())
    k = frozen_prefix(strategy, n)
    # a term comparing layer-group outputs with theta_0's runs both models on the raw inputs
    reading = [t.name for t in exp.regularizers() if groups_read(t, n)]
    why = f"regularize.{reading[0]} compares layer-group outputs with theta_0's on the raw inputs" if reading else None
    plan = plan_features(exp, backbone, k, probe_phase(strategy), why)
    # features that must be computed with cache.mode=off (an L-BFGS probe) go to a store that ends with the run
    root = scratch if exp.cache.mode == "off" else None
    if exp.data.streaming and (not plan.data.use or exp.data.eval_shifts or exp.data.shift):
        why = plan.data.reason if not plan.data.use else "shifted test sets are made from the raw images"
        raise UserError(f"data.streaming: a stream is read once, in order, to compute a frozen backbone's cached "
                        f"features; this run cannot ({why}): load the dataset without streaming")
    pool = np.concatenate([split.train, split.val, split.test])
    probe: dict[str, Any] = {}
    if plan.solver == "lbfgs" and plan.probe is not plan.data:
        rows, report = cached_rows(exp, backbone, plan.probe, raw, pool, root)
        probe = {"probe_rows": rows, "probe_split": plan.probe.split, "probe_report": report}
    if not plan.data.use:
        module_data = raw_datamodule(exp.data, backbone.preprocessing, raw, split, info, exp.seed)
        return RunData(module_data, None, CacheReport(False, plan.data.reason, k), plan.solver,
                       weights_digest(backbone), raw, **probe)
    rows, report = cached_rows(exp, backbone, plan.data, raw, pool, root)
    if plan.solver == "lbfgs" and plan.probe is plan.data:
        probe = {"probe_rows": rows, "probe_split": plan.data.split, "probe_report": report}
    module_data = cached_datamodule(exp, raw, split, rows, plan.data.split.kind, info)
    return RunData(module_data, plan.data.split.suffix, report, plan.solver, report.weights, raw,
                   plan.data.split.prefix, **probe)


def fit_probe_phase(head: torch.nn.Module, run_data: RunData, phase: ProbePhase) -> dict[str, Any]:
    """The converged linear probe, before Lightning trains anything: the head's last (linear) layer fitted by
    L-BFGS on the whole frozen backbone's features of the training split, its L2 chosen on validation."""
    split, labels = run_data.data.split, run_data.raw.labels
    collate = FeatureCollate(run_data.probe_split.kind)

    def features(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        indices = getattr(split, part)
        inputs, y = collate([(run_data.probe_rows[int(i)], int(labels[int(i)])) for i in indices])
        with torch.no_grad():
            return run_data.probe_split.suffix(inputs), y

    (x, y), (x_val, y_val) = features("train"), features("val")
    reset_peak_memory(torch.device("cpu"))
    t0 = time.perf_counter()
    fit = fit_probe(x, y, x_val, y_val, run_data.data.num_classes, list(phase.l2) if phase.l2 else None)
    seconds = time.perf_counter() - t0
    last = head[-1]
    with torch.no_grad():
        last.weight.copy_(fit.weight)
        last.bias.copy_(fit.bias)
        train_loss = float(torch.nn.functional.cross_entropy(head(x), y))
    return {"probe/solver": "lbfgs", "probe/l2": fit.l2, "probe/val_acc": fit.grid[fit.l2],
            "probe/iterations": float(fit.iterations), "probe/solve_seconds": seconds,
            "probe/cache_key": run_data.probe_report.key, "train/loss": train_loss,
            "throughput/train_samples_per_sec": len(y) / max(seconds, 1e-9), "time/fit_seconds": seconds,
            "memory/peak_mb": peak_memory_mb(torch.device("cpu")),
            **{f"probe/val_acc@l2={l2:g}": acc for l2, acc in fit.grid.items()}}


def build_module_from(exp: Experiment, backbone: Backbone, num_classes: int, strategy: Strategy | None = None,
                      suffix: Any = None, train_labels: Any = None, head: torch.nn.Module | None = None,
                      ) -> TransferModule:
    """The module of `exp` (strategy: resolved from `exp` unless given; `suffix`: train on cached prefix outputs;
    `head`: a head already built, e.g. fitted by the probe phase)."""
    strategy = strategy or build_strategy_from(exp, backbone)
    class_weights = None
    if exp.optim.class_weights == "balanced" and train_labels is not None:
        counts = torch.bincount(torch.as_tensor(train_labels), minlength=num_classes).float()
        class_weights = counts.sum() / (num_classes * counts.clamp_min(1.0))
    return TransferModule(backbone, head or build_head_from(exp, backbone, num_classes), strategy, num_classes,
                          optim=exp.optim, bn=exp.freeze.bn, class_weights=class_weights, regularize=exp.regularizers(),
                          seed=exp.seed, channels_last=exp.trainer.channels_last, suffix=suffix,
                          divergence_factor=exp.trainer.divergence_factor)


def build_head_from(exp: Experiment, backbone: Backbone, num_classes: int) -> torch.nn.Module:
    head = build_head(backbone.num_features, num_classes, exp.head.type, exp.head.hidden, exp.head.dropout,
                      getattr(backbone, "mixed_layers", None))
    if exp.head.from_run:
        load_run_head(head, exp.backbone.weights)
    return head


def run(exp: Experiment, out: str | Path | None = None, callbacks: Sequence[L.Callback] = (),
        group: str | None = None, restart: bool = False, label: str | None = None, test: bool = True,
        cell: dict[str, Any] | None = None) -> RunResult:
    """Build everything from `exp`, fit, restore the best checkpoint, test, and write the run folder.

    `callbacks` are added to the trainer's (e.g. a pruning callback of a study, or a probe in a test);
    `group` is the W&B group (a study's name; default: the experiment's name); `restart`: start over when the
    folder's last checkpoint is damaged (kept aside); `label`: a study cell's swept settings, in the W&B run name;
    `test=False` (a tuning trial, selected on validation only) never runs the test split: no test metric, no
    predictions; `cell`: what a study knows of the run beyond its settings (a tuned study's `phase` and `arm`),
    into the W&B config, with the phase as its job_type.
    """
    preflight(exp)
    check_accelerator(exp)
    check_distributed(exp, out)
    chosen = run_dir_for(exp, out)
    folder = Path(chosen) if chosen is not None else new_folder(Path(exp.output_dir) / exp.name)
    run_dir, resume = choose(folder, dump_yaml(exp), restart)  # refused before anything is built
    try:
        return _build_and_run(exp, run_dir, resume, callbacks, group, label, test, cell)
    except FloatingPointError as exc:
        raise UserError(f"training diverged: {exc}; lower optim.lr (nothing was kept as a result)") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on the device while writing the run in {run_dir} (it has no "
                            f"result, so it is not a finished run)") from None
        raise


@dataclass
class Built:
    """A run's parts before anything trains, as `run()` builds them: `trainer.fit(built.module,
    datamodule=built.data)` with a user's own `lightning.Trainer` trains what `run()` would."""

    backbone: Backbone
    strategy: Strategy  # resolved against the backbone (after a converged probe phase: what trains next)
    data: TransferDataModule
    module: TransferModule
    run_data: RunData
    extra: dict[str, Any]  # what the data step and a probe phase recorded (probe/*)
    probe_only: dict[str, Any] | None  # the probe phase was the whole run: its results (nothing left to train)


def build(exp: Experiment, scratch: str | Path | None = None) -> Built:
    """Build the backbone, the resolved strategy, the data module and the LightningModule of `exp`, seeded as
    `run()` seeds them (`scratch`: where features computed with cache.mode=off go; default a new temporary
    folder)."""
    L.seed_everything(exp.seed, workers=True, verbose=False)
    backbone = build_backbone_from(exp)
    # again: loading pretrained weights may or may not draw random numbers (a reused template draws none), and the
    # head's initialisation must not depend on that
    L.seed_everything(exp.seed, workers=True, verbose=False)
    strategy = build_strategy_from(exp, backbone)
    run_data = build_data_from(exp, backbone, strategy, Path(scratch or tempfile.mkdtemp(prefix="tlr-features-")))
    data = run_data.data
    head = build_head_from(exp, backbone, data.num_classes)
    extra: dict[str, Any] = {"probe/solver": run_data.probe} if run_data.probe != "none" else {}
    probe_fit: dict[str, Any] = {}
    phase = probe_phase(strategy)
    if run_data.probe == "lbfgs" and phase is not None:
        probe_fit = fit_probe_phase(head, run_data, phase)
        extra.update({k: v for k, v in probe_fit.items() if k.startswith("probe/")})
        # what trains after the probe; a linear probe keeps its all-frozen plan and trains nothing more
        strategy = phase.then or strategy
    module = build_module_from(exp, backbone, data.num_classes, strategy, run_data.suffix,
                               data.raw.labels[data.split.train], head)
    trains = not probe_fit or phase.then is not None
    return Built(backbone, strategy, data, module, run_data, extra, None if trains else probe_fit)


def _build_and_run(exp: Experiment, run_dir: Path, resume: Path | None, callbacks: Sequence[L.Callback],
                   group: str | None, label: str | None, test: bool, cell: dict[str, Any] | None) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="tlr-features-") as scratch:
        b = build(exp, scratch)
        return _fit_and_test(exp, run_dir, resume, callbacks, group, label, b.backbone, b.run_data, b.module,
                             b.extra, b.probe_only, test, cell)


def _fit_and_test(exp: Experiment, run_dir: Path, resume: Path | None, callbacks: Sequence[L.Callback],
                  group: str | None, label: str | None, backbone: Backbone, run_data: RunData,
                  module: TransferModule, extra: dict[str, Any], probe_only: dict[str, Any] | None,
                  test: bool = True, cell: dict[str, Any] | None = None) -> RunResult:
    """Fit (or, when the probe phase was the whole run, `probe_only` holds its results and nothing trains), restore
    the best checkpoint, test (unless `test` is off), and write the run's files."""
    data = run_data.data
    primary = global_rank(exp.trainer) == 0  # under DDP only rank 0 writes
    # where a resumed run went on from (the epoch its last checkpoint holds): evidence that nothing started over
    resumed = {"resumed_from_epoch": identity(resume)["checkpoint/epoch"]} if resume is not None else {}
    module.run_info = {"tl_config": exp.to_dict(), "tl_classes": list(run_data.raw.classes), **new_attempt()}
    cache = run_data.cache.metrics()
    record = run_record(exp, backbone.weights_source, run_data.weights, {**cache, **extra}, sys.argv)
    if primary:
        # the exact examples of each split, so a subset can be reproduced (or audited) later
        start(run_dir, dump_yaml(exp), {k: getattr(data.split, k).tolist() for k in ("train", "val", "test")}, record)
        share_run_dir(run_dir)
    best, trainer_callbacks, throughput = _checkpointing(exp, run_dir, probe_only is not None)
    tracker = start_tracking(exp, run_dir, record, group, label, cell) if primary else Tracker(None)
    t = exp.trainer
    varying = module.train_every_planned_group(t.max_epochs) if world_size(t) > 1 else False
    if t.compile and probe_only is None:
        (module.suffix or module.backbone).compile()
    trainer = fit_trainer(exp, run_dir, [*trainer_callbacks, *callbacks], tracker.logger, t.max_epochs, varying)
    try:
        if probe_only is None:
            trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
        else:
            _keep_probe(trainer, module, data, checkpoint(run_dir, BEST), best)
        if not trainer.is_global_zero:
            leave_group()
            return RunResult(run_dir, {})  # rank 0 tests and writes
        metrics = _test(exp, trainer, tracker, best, module, run_data, run_dir, backbone, test)
        metrics.update(probe_only or {})
        metrics.update(throughput.metrics)
        metrics.update(module.freeze_stats())
        metrics.update(module.lr_scale_stats())
        # the checkpoint holding the model just tested, which every reader must load (and checks it does)
        restored = best.best_model_path if t.restore_best else None
        tested = restored or (best.best_model_path if probe_only is not None else checkpoint(run_dir, LAST))
        metrics.update(identity(Path(tested)))
        metrics.update({
            "weights_source": backbone.weights_source, "run_dir": str(run_dir.resolve()),
            "backbone": backbone.name, "dataset": exp.data.name, "strategy": exp.freeze.strategy,
            "seed": exp.seed, "split_seed": exp.data.split_seed,
            "epochs": trainer.current_epoch if probe_only is None else 0,
            "data/train_size": len(data.sets["train"]), "data/val_size": len(data.sets["val"]),
            "data/test_size": len(data.sets["test"]), "data/num_classes": data.num_classes, **data.subset_info,
            **cache, **extra, **resumed,
        })
        metrics.update(tracker.finish(metrics))
    except BaseException:
        tracker.finish(None)
        raise
    after_run(module.strategy, module.backbone, module.head, run_dir)
    finish(run_dir, metrics)
    wait_for_launched(trainer)
    return RunResult(run_dir, metrics)


def _checkpointing(exp: Experiment, run_dir: Path, probe_only: bool
                   ) -> tuple[ModelCheckpoint, list[L.Callback], Throughput]:
    """The best-epoch checkpoint, the trainer's own callbacks (with it: last.ckpt, throughput, early stopping) and
    the throughput meter."""
    t = exp.trainer
    mode = "max" if t.monitor == "val/acc" else "min"
    best = ModelCheckpoint(dirpath=run_dir / CHECKPOINTS, filename=BEST, monitor=t.monitor, mode=mode,
                           save_top_k=1, auto_insert_metric_name=False)
    # last.ckpt at every epoch end makes a killed run resumable with the same command (Lightning 2.6's
    # save_last only writes when the monitored metric improved, so it is a callback of its own)
    latest = ModelCheckpoint(dirpath=run_dir / CHECKPOINTS, filename=LAST, save_top_k=1,
                             save_on_train_epoch_end=True, enable_version_counter=False)
    throughput = Throughput()
    # a whole-run probe has nothing to resume: its best checkpoint is all there is to keep
    callbacks: list[L.Callback] = [best, *([] if probe_only else [latest]), throughput]
    if t.patience is not None and not probe_only:
        callbacks.append(EarlyStopping(monitor=t.monitor, mode=mode, patience=t.patience))
    return best, callbacks, throughput


def _test(exp: Experiment, trainer: L.Trainer, tracker: Tracker, best: ModelCheckpoint, module: TransferModule,
          run_data: RunData, run_dir: Path, backbone: Backbone, test: bool) -> dict[str, Any]:
    """The fit's metrics and, on the restored best epoch (unless the last is asked for), the test split's, its
    predictions and the shifted test sets' (none when `test` is off)."""
    t, data = exp.trainer, run_data.data
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tester = testing_trainer(exp, trainer, run_dir, tracker.logger)
    # the best validation epoch is restored for the test, unless the last epoch is asked for (Keras-style)
    restored = best.best_model_path if t.restore_best else None
    if test:
        tester.test(module, datamodule=data, ckpt_path=restored or None, weights_only=True, verbose=False)
    metrics = {**fit_metrics, **{k: float(v) for k, v in tester.callback_metrics.items()}}
    if restored and best.best_model_score is not None:
        metrics[t.monitor] = float(best.best_model_score)  # the restored model's score
        if t.monitor != "val/acc":  # and its validation accuracy, which no epoch-end value is
            tester.validate(module, datamodule=data, ckpt_path=restored, weights_only=True, verbose=False)
            metrics["val/acc"] = float(tester.callback_metrics["val/acc"])
    if test:
        predictions = module.test_predictions()
        metrics.update(write_predictions(run_dir, data.split.test, predictions, run_data.raw.classes))
        tracker.log_confusion(predictions["label"], predictions["pred"], run_data.raw.classes)
        metrics.update(shifted_test_sets(exp, backbone, module, run_data, run_dir))
        metrics[AT_CHANCE] = at_chance(metrics["test/acc"], len(data.sets["test"]), data.num_classes,
                                       module.first_loss, fit_metrics.get("train/loss"))
    return metrics


def _keep_probe(trainer: L.Trainer, module: TransferModule, data: TransferDataModule, path: Path,
                best: ModelCheckpoint) -> None:
    """A whole-run probe: nothing trains after the solve, so its model is validated once and kept as the run's
    best checkpoint (what testing, `load_run`, predict and export read), scored like any other."""
    trainer.validate(module, datamodule=data, verbose=False)
    trainer.save_checkpoint(path, weights_only=True)
    best.best_model_path = str(path)
    best.best_model_score = trainer.callback_metrics[best.monitor]


def shifted_test_sets(exp: Experiment, backbone: Backbone, module: TransferModule, run_data: RunData,
                      run_dir: Path) -> dict[str, float]:
    """test_<shift>/acc for every `data.eval_shifts` entry, on the test split's examples. With two or more shifts,
    their mean (test_shifted/acc) gets per-example predictions like test/acc (every shifted copy's predictions in
    turn, each test example's index repeated once per shift), so that its intervals are crossed too."""
    shifts = parse_shifts(exp.data.eval_shifts)
    if not shifts:
        return {}
    spec = backbone.preprocessing
    size = exp.data.image_size or spec.input_size
    test = np.asarray(run_data.data.split.test)
    metrics, preds = evaluate_shifts(module, shifts, run_data.raw, test,
                                     lambda shift: ImageCollate(spec, size, shift=shift), run_data.prefix,
                                     exp.data.eval_batch_size or max(64, exp.data.batch_size))
    if MEAN_METRIC in metrics:
        label = np.asarray(run_data.raw.labels)[test]
        write_npz(run_dir / SHIFTED_PREDICTIONS, index=np.tile(test, len(shifts)),
                  label=np.tile(label, len(shifts)), pred=np.concatenate([preds[s.metric].numpy() for s in shifts]))
    return metrics
