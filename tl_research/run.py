"""`run(experiment)`: the one call path for the CLI, studies, tests and notebooks.

Build order: backbone -> strategy (resolved against the backbone's groups) -> data -> module. The data step is where
the feature cache plugs in: when the first k groups stay frozen for the whole run, the data module serves cached
prefix outputs and the module trains `head(suffix(x))`; otherwise it serves raw inputs. Callers see no difference.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import tempfile
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
from tl_research.backbones.runs import load_run_head
from tl_research.cache.features import CacheReport, cached_datamodule, cached_rows, decide
from tl_research.config import Experiment, dump_yaml
from tl_research.data.datamodule import ImageCollate, TransferDataModule, input_collates, load_data, select
from tl_research.data.shifts import evaluate_shifts, parse_shift, parse_shifts
from tl_research.errors import UserError
from tl_research.records.record import run_record
from tl_research.records.rundir import create_run_dir, make_run_dir, write_json
from tl_research.records.tracking import Tracker, preflight, start_tracking
from tl_research.stats import wilson
from tl_research.strategies import Strategy, frozen_prefix
from tl_research.strategies.lora import merge_lora
from tl_research.training.callbacks import Throughput
from tl_research.training.distributed import (
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
from tl_research.training.heads import build_head
from tl_research.training.module import TransferModule
from tl_research.training.probe import DEFAULT_GRID, fit_probe


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


def build_backbone_from(exp: Experiment) -> Backbone:
    b = exp.backbone
    options = {"coarse": b.coarse, "pooling": b.pooling, "max_length": b.max_length, "layers": b.layers}
    backbone = build_backbone(b.name, b.weights, **options)
    if b.keep_groups is not None:
        # the new upper groups are what a from-scratch backbone would start with (drawn from the run's seed)
        reinit_groups(backbone, build_backbone(b.name, "none", **options), b.keep_groups)
    return backbone


def build_strategy_from(exp: Experiment, backbone: Backbone) -> Strategy:
    """The experiment's strategy, checked against this backbone's groups (the one place depth bounds are checked)."""
    return exp.freeze.options.resolve(len(backbone.layer_groups()), exp.optim.lr)


def probe_solver(exp: Experiment, cached: bool) -> str:
    """`lbfgs` or `sgd` for strategies with a linear-probe phase (auto: L-BFGS when features are cached)."""
    choice = getattr(exp.freeze.options, "probe", "sgd")
    linear = exp.head.type == "linear" and exp.backbone.layers != "weighted"
    if choice == "lbfgs" and not linear:
        raise UserError("freeze.probe: lbfgs fits a linear head on fixed features; with head.type=mlp or "
                        "backbone.layers=weighted (a learned mix) use freeze.probe=sgd")
    if exp.optim.class_weights != "none":
        if choice == "lbfgs":
            raise UserError("freeze.probe: the lbfgs probe fits an unweighted logistic regression; with "
                            "optim.class_weights=balanced use freeze.probe=sgd")
        linear = False
    solver = ("lbfgs" if cached and linear else "sgd") if choice == "auto" else choice
    if solver == "lbfgs" and world_size(exp.trainer) > 1:
        raise UserError("freeze.probe: the L-BFGS probe is one full-batch solve on one process (seconds); with "
                        "trainer.devices x trainer.num_nodes > 1 use one device, or freeze.probe=sgd")
    return solver


def require_features(decision: Any) -> None:
    """An L-BFGS probe asked for explicitly needs features it can compute once."""
    if not decision.use:
        raise UserError(f"freeze.probe: lbfgs fits the head on features computed once, but here {decision.reason}; "
                        f"use freeze.probe=sgd")


@dataclass
class RunData:
    """The data step's result: the data module, the split the suffix runs on (None: raw inputs) and the cache's
    report."""

    data: TransferDataModule
    suffix: Any
    cache: Any
    probe: str  # lbfgs | sgd | none
    weights: str  # digest of the backbone's weights as loaded
    raw: Any = None  # the pool of raw inputs (shifted test sets are made from it)
    prefix: Any = None  # the frozen prefix the cached rows came from (None: raw inputs)


def build_data_from(exp: Experiment, backbone: Backbone, strategy: Strategy, scratch: Path) -> RunData:
    """Raw inputs, or cached outputs of the frozen prefix (the feature-cache slot)."""
    raw = load_data(exp.data, backbone.modality)
    parse_shifts(exp.data.eval_shifts)  # bad shifts fail before training
    if exp.data.shift:
        parse_shift(exp.data.shift, "data.shift")
        if exp.data.eval_shifts:
            raise UserError("data.eval_shifts: cannot be combined with data.shift (the test split is already shifted)")
    split, info = select(raw, exp.data)
    n = len(backbone.layer_groups())
    k = frozen_prefix(strategy, n)
    is_probe = exp.freeze.strategy == "linear_probe"
    wants_lbfgs = is_probe and getattr(strategy, "probe", "auto") == "lbfgs"
    decision = decide(exp, backbone, k, required=wants_lbfgs)
    probe = probe_solver(exp, decision.use) if is_probe else "none"
    if probe == "lbfgs":
        require_features(decision)
    if not decision.use:
        collate, train_collate = input_collates(backbone.preprocessing, exp.data)
        d = exp.data
        module_data = TransferDataModule(raw, split, collate, d.batch_size, d.eval_batch_size, d.num_workers,
                                         exp.seed, train_collate, info)
        return RunData(module_data, None, CacheReport(False, decision.reason, k), probe, weights_digest(backbone),
                       raw)
    # an L-BFGS probe with cache.mode=off computes features once into a store that ends with the run
    root = scratch if exp.cache.mode == "off" else None
    pool = _pool(split)
    rows, report = cached_rows(exp, backbone, decision, raw, pool, root)
    module_data = cached_datamodule(exp, raw, split, rows, decision.split.kind, info)
    if probe == "lbfgs":
        module_data.batch_size = len(split.train)  # one full batch: the solver sees the whole training split
    return RunData(module_data, decision.split.suffix, report, probe, report.weights, raw, decision.split.prefix)


def _pool(split: Any) -> Any:
    return np.concatenate([split.train, split.val, split.test])


def warm_start_probe(exp: Experiment, backbone: Backbone, module: TransferModule, run_data: RunData,
                     scratch: Path) -> dict[str, Any]:
    """LP-FT with the L-BFGS probe: fit the head on features of the whole frozen backbone before fine-tuning."""
    n = len(backbone.layer_groups())
    want = getattr(exp.freeze.options, "probe", "auto")
    decision = decide(exp, backbone, n, required=want == "lbfgs")
    if want == "lbfgs":
        require_features(decision)
    if probe_solver(exp, decision.use) != "lbfgs":
        return {"probe/solver": "sgd"}
    data = run_data.data
    split = data.split
    rows, report = cached_rows(exp, backbone, decision, data.raw, _pool(split),
                               scratch if exp.cache.mode == "off" else None)

    def gather(idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.stack([torch.as_tensor(rows[int(j)], dtype=torch.float32) for j in idx]),
                torch.as_tensor(data.raw.labels[idx]))

    fit = fit_probe(*gather(split.train), *gather(split.val), data.num_classes,
                    getattr(exp.freeze.options, "probe_l2", None))
    with torch.no_grad():
        module.head[-1].weight.copy_(fit.weight)
        module.head[-1].bias.copy_(fit.bias)
    module.strategy = dataclasses.replace(module.strategy, probe_epochs=0)
    module.set_plan(module.strategy.plan(n, 0))
    return {"probe/solver": "lbfgs", "probe/l2": fit.l2, "probe/val_acc": fit.grid[fit.l2],
            "probe/cache_key": report.key}


def build_module_from(exp: Experiment, backbone: Backbone, num_classes: int, strategy: Strategy | None = None,
                      suffix: Any = None, probe: str = "none", train_labels: Any = None) -> TransferModule:
    """The module of `exp` (strategy: resolved from `exp` unless given; `suffix`: train on cached prefix outputs;
    `probe`: lbfgs fits the head by L-BFGS in one full-batch step)."""
    strategy = strategy or build_strategy_from(exp, backbone)
    class_weights = None
    if exp.optim.class_weights == "balanced" and train_labels is not None:
        counts = torch.bincount(torch.as_tensor(train_labels), minlength=num_classes).float()
        class_weights = counts.sum() / (num_classes * counts.clamp_min(1.0))
    head = build_head(backbone.num_features, num_classes, exp.head.type, exp.head.hidden, exp.head.dropout,
                      getattr(backbone, "mixed_layers", None))
    if exp.head.from_run:
        load_run_head(head, exp.backbone.weights)
    grid = None
    if probe == "lbfgs":
        grid = list(getattr(strategy, "probe_l2", None) or DEFAULT_GRID)
    return TransferModule(backbone, head, strategy, num_classes, optim=exp.optim, bn=exp.freeze.bn,
                          class_weights=class_weights,
                          l2sp=exp.freeze.l2sp, seed=exp.seed, channels_last=exp.trainer.channels_last,
                          suffix=suffix, probe_grid=grid)


def run(exp: Experiment, out: str | Path | None = None, callbacks: Sequence[L.Callback] = (),
        group: str | None = None, restart: bool = False, label: str | None = None) -> RunResult:
    """Build everything from `exp`, fit, restore the best checkpoint, test, and write metrics.json.

    `callbacks` are added to the trainer's (e.g. a pruning callback of a study, or a probe in a test);
    `group` is the W&B group (a study's name; default: the experiment's name); `restart`: start over when the
    folder's last checkpoint is damaged (kept aside); `label`: a study cell's swept settings, in the W&B run name.
    """
    preflight(exp)
    check_accelerator(exp)
    check_distributed(exp, out)
    run_dir, resume = make_run_dir(exp, run_dir_for(exp, out), restart)  # refused before anything is built
    try:
        return _build_and_run(exp, run_dir, resume, callbacks, group, label)
    except FloatingPointError as exc:
        raise UserError(f"training diverged: {exc}; lower optim.lr (nothing was kept as a result)") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on the device while writing the run in {run_dir} (the run folder "
                            f"has no metrics.json: it is not a finished run)") from None
        raise


def _build_and_run(exp: Experiment, run_dir: Path, resume: Path | None, callbacks: Sequence[L.Callback],
                   group: str | None, label: str | None) -> RunResult:
    L.seed_everything(exp.seed, workers=True, verbose=False)
    backbone = build_backbone_from(exp)
    # again: loading pretrained weights may or may not draw random numbers (a reused template draws none), and the
    # head's initialisation must not depend on that
    L.seed_everything(exp.seed, workers=True, verbose=False)
    strategy = build_strategy_from(exp, backbone)
    with tempfile.TemporaryDirectory(prefix="tlr-features-") as scratch:
        run_data = build_data_from(exp, backbone, strategy, Path(scratch))
        data = run_data.data
        module = build_module_from(exp, backbone, data.num_classes, strategy, run_data.suffix, run_data.probe,
                                   data.raw.labels[data.split.train])
        extra: dict[str, Any] = {"probe/solver": run_data.probe} if run_data.probe != "none" else {}
        if exp.freeze.strategy == "lp_ft":
            extra = warm_start_probe(exp, backbone, module, run_data, Path(scratch))
        return _fit_and_test(exp, run_dir, resume, callbacks, group, label, backbone, run_data, module, extra)


def _fit_and_test(exp: Experiment, run_dir: Path, resume: Path | None, callbacks: Sequence[L.Callback],
                  group: str | None, label: str | None, backbone: Backbone, run_data: RunData,
                  module: TransferModule, extra: dict[str, Any]) -> RunResult:
    data = run_data.data
    primary = global_rank(exp.trainer) == 0  # under DDP only rank 0 writes
    module.run_info = {"tl_config": exp.to_dict(), "tl_classes": list(run_data.raw.classes)}
    cache = run_data.cache.metrics()
    record = run_record(exp, backbone.weights_source, run_data.weights, {**cache, **extra}, sys.argv)
    if primary:
        create_run_dir(run_dir)
        (run_dir / "config.yaml").write_text(dump_yaml(exp))
        # the exact examples of each split, so a subset can be reproduced (or audited) later
        write_json(run_dir / "split.json", {k: getattr(data.split, k).tolist() for k in ("train", "val", "test")})
        write_json(run_dir / "run.json", record)
        share_run_dir(run_dir)

    t = exp.trainer
    mode = "max" if t.monitor == "val/acc" else "min"
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=t.monitor, mode=mode,
                           save_top_k=1, auto_insert_metric_name=False)
    # last.ckpt at every epoch end makes a killed run resumable with the same command (Lightning 2.6's
    # save_last only writes when the monitored metric improved, so it is a callback of its own)
    latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                             save_on_train_epoch_end=True, enable_version_counter=False)
    throughput = Throughput()
    # a one-step L-BFGS probe has no schedule to resume: its best checkpoint is all there is to keep
    callbacks = [best, *([] if run_data.probe == "lbfgs" else [latest]), throughput, *callbacks]
    if t.patience is not None:
        callbacks.append(EarlyStopping(monitor=t.monitor, mode=mode, patience=t.patience))
    tracker = start_tracking(exp, run_dir, record, group, label) if primary else Tracker(None)
    # the L-BFGS probe is one full-batch solve: a single epoch
    epochs = 1 if run_data.probe == "lbfgs" else t.max_epochs
    varying = module.train_every_planned_group(epochs) if world_size(t) > 1 else False
    if t.compile:
        (module.suffix or module.backbone).compile()
    trainer = fit_trainer(exp, run_dir, callbacks, tracker.logger, epochs, varying)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
        if not trainer.is_global_zero:
            leave_group()
            return RunResult(run_dir, {})  # rank 0 tests and writes
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        tester = testing_trainer(exp, trainer, run_dir, tracker.logger)
        # the best validation epoch is restored for the test, unless the last epoch is asked for (Keras-style)
        restored = best.best_model_path if t.restore_best else None
        tester.test(module, datamodule=data, ckpt_path=restored or None, weights_only=True, verbose=False)
        metrics = {**fit_metrics, **{k: float(v) for k, v in tester.callback_metrics.items()}}
        if restored and best.best_model_score is not None:
            metrics[t.monitor] = float(best.best_model_score)  # the restored model's score
            if t.monitor != "val/acc":  # and its validation accuracy, which no epoch-end value is
                tester.validate(module, datamodule=data, ckpt_path=restored, weights_only=True, verbose=False)
                metrics["val/acc"] = float(tester.callback_metrics["val/acc"])
        metrics.update(throughput.metrics)
        metrics.update(module.freeze_stats())
        metrics.update(module.lr_scale_stats())
        predictions = module.test_predictions()
        metrics.update(save_predictions(run_dir / "predictions.npz", data.split.test, predictions,
                                        run_data.raw.classes))
        tracker.log_confusion(predictions["label"], predictions["pred"], run_data.raw.classes)
        metrics.update(shifted_test_sets(exp, backbone, module, run_data))
        metrics.update({
            "weights_source": backbone.weights_source, "run_dir": str(run_dir.resolve()),
            "backbone": backbone.name, "dataset": exp.data.name, "strategy": exp.freeze.strategy,
            "seed": exp.seed, "split_seed": exp.data.split_seed, "epochs": trainer.current_epoch,
            "data/train_size": len(data.sets["train"]), "data/val_size": len(data.sets["val"]),
            "data/test_size": len(data.sets["test"]), "data/num_classes": data.num_classes, **data.subset_info,
            **cache, **extra,
        })
        metrics.update(tracker.finish(metrics))
    except BaseException:
        tracker.finish(None)
        raise
    lora = getattr(exp.freeze.options, "lora", None)
    if lora is not None and lora.merge:
        export_merged(module, run_dir / "export")
    write_json(run_dir / "metrics.json", metrics)
    wait_for_launched(trainer)
    return RunResult(run_dir, metrics)


def shifted_test_sets(exp: Experiment, backbone: Backbone, module: TransferModule, run_data: RunData,
                      ) -> dict[str, float]:
    """test_<shift>/acc for every `data.eval_shifts` entry, on the test split's examples."""
    shifts = parse_shifts(exp.data.eval_shifts)
    if not shifts:
        return {}
    spec = backbone.preprocessing
    size = exp.data.image_size or spec.input_size
    return evaluate_shifts(module, shifts, run_data.raw, run_data.data.split.test,
                           lambda shift: ImageCollate(spec, size, shift=shift), run_data.prefix,
                           exp.data.eval_batch_size or max(64, exp.data.batch_size))


def save_predictions(path: Path, test_indices: Any, predictions: dict[str, Any],
                     classes: list[str] | None = None) -> dict[str, Any]:
    """Per-example test predictions (`index` into the dataset's pool, `label`, `pred`, `prob`), the confusion
    matrix beside them (confusion.csv: rows true class, columns predicted), and the Wilson interval of the test
    accuracy, the balanced accuracy and each class's accuracy they give."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, index=np.asarray(test_indices), **predictions)
    os.replace(tmp, path)
    label, pred = predictions["label"], predictions["pred"]
    correct, total = int((pred == label).sum()), len(label)
    low, high = wilson(correct, total)
    k = len(classes) if classes else int(max(label.max(), pred.max())) + 1
    names = classes or [str(i) for i in range(k)]
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (label, pred), 1)
    rows = ["true\\pred," + ",".join(names)] + [f"{n}," + ",".join(map(str, r)) for n, r in zip(names, confusion)]
    (path.parent / "confusion.csv").write_text("\n".join(rows) + "\n")
    present = confusion.sum(1) > 0
    per_class = {n: float(confusion[i, i] / confusion[i].sum()) for i, n in enumerate(names) if present[i]}
    return {"test/acc_ci_low": low, "test/acc_ci_high": high,
            "test/balanced_acc": float(np.mean(list(per_class.values()))), "test/acc_per_class": per_class}


def export_merged(module: TransferModule, folder: Path) -> None:
    """Fold LoRA adapters into the (tested) model and save plain state dicts: `backbone.pth` loads back with
    `backbone.weights: <path>`, `head.pth` into the head."""
    folder.mkdir(parents=True, exist_ok=True)
    merge_lora(module.backbone.model)
    torch.save(module.backbone.model.state_dict(), folder / "backbone.pth")
    torch.save(module.head.state_dict(), folder / "head.pth")
