"""`run(experiment)`: the one call path for the CLI, studies, tests and notebooks."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from tl_research.backbones import Backbone, build_backbone
from tl_research.callbacks import Throughput
from tl_research.config import Experiment, dump_yaml
from tl_research.data.datamodule import TransferDataModule, build_datamodule
from tl_research.data.datasets import LoadOptions
from tl_research.errors import UserError
from tl_research.heads import build_head
from tl_research.module import TransferModule
from tl_research.strategies import build_strategy
from tl_research.tracking import preflight, start_tracking


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def make_run_dir(exp: Experiment, out: str | Path | None = None) -> tuple[Path, Path | None]:
    """The run folder and, when `out` holds an unfinished run of this same experiment, the checkpoint to resume.

    Default folder: `output_dir/name/<time>-<random>`. A finished run is never overwritten, and an unfinished
    one is only resumed by the identical experiment.
    """
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(exp.output_dir) / exp.name / f"{stamp}-{secrets.token_hex(2)}"
    else:
        run_dir = Path(out)
    if (run_dir / "metrics.json").exists():
        raise UserError(f"--out: {run_dir} already holds a finished run; choose another folder")
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        saved = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else None
        if saved != dump_yaml(exp):
            raise UserError(f"--out: {run_dir} holds an unfinished run of a different config; "
                            f"resume it with its own config.yaml or choose another folder")
        return run_dir, last
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {run_dir} ({exc.strerror or exc})") from None
    return run_dir, None


def build_backbone_from(exp: Experiment) -> Backbone:
    b = exp.backbone
    return build_backbone(b.name, b.weights, b.coarse, b.pooling, b.max_length)


def build_data_from(exp: Experiment, backbone: Backbone) -> TransferDataModule:
    d = exp.data
    options = LoadOptions(d.text_column, d.label_column, d.x_key, d.y_key)
    return build_datamodule(d.name, backbone.preprocessing, backbone.modality, root=d.root,
                            split_seed=d.split_seed, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                            shots=d.shots, share=d.fraction, train_limit=d.train_limit, eval_limit=d.eval_limit,
                            image_size=d.image_size, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
                            num_workers=d.num_workers, seed=exp.seed, options=options,
                            augment=dataclasses.asdict(d.augment))


def build_module_from(exp: Experiment, backbone: Backbone, num_classes: int) -> TransferModule:
    o = exp.optim
    strategy = build_strategy(exp.freeze, len(backbone.layer_groups()), o.lr)
    head = build_head(backbone.num_features, num_classes, exp.head.type, exp.head.hidden, exp.head.dropout)
    return TransferModule(backbone, head, strategy, num_classes, optimizer=o.name, lr=o.lr,
                          weight_decay=o.weight_decay, momentum=o.momentum, head_lr_mult=o.head_lr_mult,
                          schedule=o.schedule, warmup_epochs=o.warmup_epochs, plateau_patience=o.plateau_patience,
                          plateau_factor=o.plateau_factor, label_smoothing=o.label_smoothing,
                          l2sp_alpha=exp.freeze.l2sp.alpha, l2sp_beta=exp.freeze.l2sp.beta, seed=exp.seed,
                          channels_last=exp.trainer.channels_last)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)  # readers never see a half-written file


def run(exp: Experiment, out: str | Path | None = None, callbacks: Sequence[L.Callback] = (),
        group: str | None = None) -> RunResult:
    """Build everything from `exp`, fit, restore the best checkpoint, test, and write metrics.json.

    `callbacks` are added to the trainer's (e.g. a pruning callback of a study, or a probe in a test);
    `group` is the W&B group (a study's name; default: the experiment's name).

    Building is split into backbone / data / module steps so that a cache of frozen-prefix features can replace
    the data step (and feed the module's unfrozen suffix) without changing this function's callers.
    """
    preflight(exp)
    L.seed_everything(exp.seed, workers=True, verbose=False)
    backbone = build_backbone_from(exp)
    data = build_data_from(exp, backbone)
    module = build_module_from(exp, backbone, data.num_classes)
    run_dir, resume = make_run_dir(exp, out)
    (run_dir / "config.yaml").write_text(dump_yaml(exp))
    # the exact examples of each split, so a subset can be reproduced (or audited) later
    _write_json(run_dir / "split.json", {k: getattr(data.split, k).tolist() for k in ("train", "val", "test")})

    t = exp.trainer
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/acc", mode="max",
                           save_top_k=1, auto_insert_metric_name=False)
    # last.ckpt at every epoch end makes a killed run resumable with the same command (Lightning 2.6's
    # save_last only writes when the monitored metric improved, so it is a callback of its own)
    latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                             save_on_train_epoch_end=True, enable_version_counter=False)
    throughput = Throughput()
    callbacks = [best, latest, throughput, *callbacks]
    if t.patience is not None:
        callbacks.append(EarlyStopping(monitor="val/acc", mode="max", patience=t.patience))
    tracker = start_tracking(exp, run_dir, backbone.weights_source, group)
    trainer = L.Trainer(max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
                        precision=t.precision, deterministic=t.deterministic, default_root_dir=run_dir,
                        logger=tracker.logger if tracker.logger is not None else False, callbacks=callbacks,
                        enable_progress_bar=t.progress_bar, enable_model_summary=False,
                        log_every_n_steps=t.log_every_n_steps)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        trainer.test(module, datamodule=data, ckpt_path=best.best_model_path or None,
                     weights_only=True, verbose=False)
        metrics = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
        if best.best_model_score is not None:
            metrics["val/acc"] = float(best.best_model_score)  # the restored model's validation accuracy
        metrics.update(throughput.metrics)
        metrics.update(module.freeze_stats())
        metrics.update({
            "weights_source": backbone.weights_source, "run_dir": str(run_dir.resolve()),
            "backbone": backbone.name, "dataset": exp.data.name, "strategy": exp.freeze.strategy,
            "seed": exp.seed, "split_seed": exp.data.split_seed, "epochs": trainer.current_epoch,
            "data/train_size": len(data.sets["train"]), "data/val_size": len(data.sets["val"]),
            "data/test_size": len(data.sets["test"]), "data/num_classes": data.num_classes, **data.subset_info,
        })
        metrics.update(tracker.finish(metrics))
    except BaseException:
        tracker.finish(None)
        raise
    if exp.freeze.strategy == "lora" and exp.freeze.lora.merge:
        export_merged(module, run_dir / "export")
    _write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, metrics)


def export_merged(module: TransferModule, folder: Path) -> None:
    """Fold LoRA adapters into the (tested) model and save plain state dicts: `backbone.pth` loads back with
    `backbone.weights: <path>`, `head.pth` into the head."""
    import torch

    from tl_research.lora import merge_lora

    folder.mkdir(parents=True, exist_ok=True)
    merge_lora(module.backbone.model)
    torch.save(module.backbone.model.state_dict(), folder / "backbone.pth")
    torch.save(module.head.state_dict(), folder / "head.pth")
