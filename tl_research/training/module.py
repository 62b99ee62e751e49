"""TransferModule: backbone + head + freezing strategy as a LightningModule."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import move_data_to_device
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from tl_research.backbones.base import Backbone
from tl_research.errors import UserError
from tl_research.strategies import FreezePlan, Strategy, prepare_backbone, resolved
from tl_research.strategies.apply import apply_modes, apply_requires_grad
from tl_research.training.optim import OptimConfig, schedule_factor
from tl_research.training.regularizers.outputs import captured, frozen_copy
from tl_research.training.regularizers.registry import Step, groups_read


class TransferModule(L.LightningModule):
    """Trains `head(backbone(x))` under a freezing strategy (resolved against the backbone here: `Strategy.resolve`).

    The optimizer holds one param group per layer group plus one for the head from step 0; the strategy's plan
    only toggles `requires_grad`, per-group lr factors and module modes, so nothing appears mid-training.
    With `suffix` (the suffix of `backbone.split(k)`), batches are the cached outputs of the frozen prefix and the
    forward is `head(suffix(x))`: the same parameters, optimizer, checkpoints and metrics as the uncached run.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, strategy: Strategy, num_classes: int, *,
                 optim: OptimConfig | None = None, bn: str = "frozen", regularize: Sequence[Any] = (), seed: int = 0,
                 channels_last: bool = False, suffix: nn.Module | None = None,
                 class_weights: torch.Tensor | None = None, divergence_factor: float | None = None) -> None:
        super().__init__()
        # resolved here as well (idempotent): built from Python, Depth(fraction=0.5) must freeze what run() freezes
        strategy = resolved(strategy, len(backbone.layer_groups()), (optim or OptimConfig()).lr)
        prepare_backbone(strategy, backbone)  # e.g. LoRA adapters, before groups and optimizer exist
        self.backbone = backbone
        self.head = head
        self.strategy = strategy
        self.bn = bn
        self.suffix = suffix
        self.groups = backbone.layer_groups()
        self.lr_scale_sums: dict[int, float] = {}
        self.lr_scale_steps = 0
        self.optim = optim or OptimConfig()
        self.divergence_factor = divergence_factor
        self.first_loss: float | None = None  # the first training loss, what divergence is measured against
        self.num_classes = num_classes
        self.chance_loss = math.log(max(num_classes, 2))  # cross-entropy of a uniform guess
        self.seed = seed
        self.channels_last = channels_last and backbone.modality == "image" and suffix is None
        # reduce-on-plateau state: a factor on every group's lr, cut when val/acc stalls (saved in checkpoints)
        self.plateau = {"scale": 1.0, "best": -math.inf, "bad_epochs": 0}
        # regularizers (regularizers/): terms added to the training loss. theta_0 is taken before any training
        # step: the pretrained weights (for L2-SP) and a frozen copy of the backbone whose group outputs terms
        # such as DELTA compare with the trained ones; both move to the module's device once, at fit start
        self.terms = list(regularize)
        self.term_groups = tuple(sorted({g for t in self.terms for g in groups_read(t, len(self.groups))}))
        uses = any(getattr(t, "uses_theta0", False) for t in self.terms)
        self.theta0 = {n: p.detach().clone() for n, p in backbone.named_parameters()} if uses else {}
        if self.term_groups and suffix is not None:
            raise UserError("regularize: a term that compares layer-group outputs with theta_0's needs raw inputs, "
                            "not cached prefix outputs (build the module without a suffix)")
        # a list, not an attribute Lightning would register: theta_0's copy is no part of the model or checkpoint
        self.source = [frozen_copy(backbone)] if self.term_groups else []
        self.term_state: dict[str, dict[str, torch.Tensor]] = {}  # what each term's `prepare` computed
        # per-class loss weights (optim.class_weights); a buffer so it follows the module's device
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # top-5 only where it can miss: with 5 classes or fewer it is 1 by construction
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=5, average="micro") if num_classes > 5 else None
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self.plan: FreezePlan = strategy.plan(len(self.groups), 0)
        apply_requires_grad(self.groups, self.plan)

    # ------------------------------------------------------------ freezing

    def set_plan(self, plan: FreezePlan) -> None:
        """Apply a plan: trainable set, BN modes and (when an optimizer exists) per-group learning rates."""
        self.plan = plan
        apply_requires_grad(self.groups, plan)
        if self.training:
            apply_modes(self.groups, plan, self.bn)
        trainer = self._attached_trainer()
        if trainer is not None and trainer.lr_scheduler_configs:
            sched = trainer.lr_scheduler_configs[0].scheduler
            for group, factor in zip(sched.optimizer.param_groups, sched.lr_lambdas):
                group["lr"] = group["initial_lr"] * factor(sched.last_epoch)

    def _attached_trainer(self) -> Any:
        """The Trainer this module is attached to, or None (Lightning's public `trainer` raises without one)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def train_every_planned_group(self, epochs: int) -> bool:
        """Make every parameter that any epoch's plan trains trainable now, and say whether the trainable set
        changes between epochs: DDP registers the trainable parameters once, when it wraps the module, and would
        never synchronise a group unfrozen later (the first epoch's plan is re-applied when training starts)."""
        plans = [self.strategy.plan(len(self.groups), e) for e in range(epochs)]
        union = tuple(any(p.trainable[i] for p in plans) for i in range(len(self.groups)))
        apply_requires_grad(self.groups, dataclasses.replace(self.plan, trainable=union))
        return len({p.trainable for p in plans}) > 1

    def train(self, mode: bool = True) -> TransferModule:
        # whoever calls train() (a user, another Lightning version) gets the BN policy re-imposed
        super().train(mode)
        if mode:
            apply_modes(self.groups, self.plan, self.bn)
        return self

    def freeze_stats(self) -> dict[str, float]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"params/trainable": trainable, "params/total": total, "freeze/depth": self.plan.depth,
                "freeze/trainable_fraction": trainable / total}

    def on_fit_start(self) -> None:
        # HF `from_pretrained` returns models in eval mode (dropout off) and Lightning 2.x never calls train():
        # start fitting from train mode + the BN policy, whatever state the backbone arrived in
        self.train()
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self.theta0 = {n: t.to(self.device) for n, t in self.theta0.items()}
        self.source = [s.to(self.device) for s in self.source]

    def on_train_start(self) -> None:
        # terms that measure something on the training data before the first step (DELTA's channel attention);
        # a resumed run has it from its checkpoint
        waiting = [t for t in self.terms if hasattr(t, "prepare") and t.name not in self.term_state]
        if not waiting:
            return
        batches = []
        for batch in self.trainer.train_dataloader:
            batches.append(move_data_to_device(batch, self.device))
            if len(batches) >= max(getattr(t, "prepare_batches", 1) for t in waiting):
                break
        source = self.source[0] if self.source else frozen_copy(self.backbone)
        for t in waiting:
            self.term_state[t.name] = t.prepare(source, batches, self.num_classes)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # a per-epoch seed, set right before the epoch's first step, makes dropout of epoch e the same whether or
        # not the run was resumed (on resume Lightning builds the loader iterator, which draws from the global
        # RNG, at a different moment)
        if batch_idx == 0:
            torch.manual_seed(self.seed * 100_003 + self.current_epoch)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # strategies that set lrs from the current gradients (Auto-RGN): the scheduler rewrites every group's lr
        # from its base at each step, so this scaling applies to this step only
        scales = getattr(self.strategy, "lr_multipliers", None)
        if scales is None:
            return
        for i, s in enumerate(scales(self.groups)):
            optimizer.param_groups[i]["lr"] *= s
            self.lr_scale_sums[i] = self.lr_scale_sums.get(i, 0.0) + s
        self.lr_scale_steps += 1

    def lr_scale_stats(self) -> dict[str, float]:
        """Mean per-step lr multiplier of each layer group (strategies with `lr_multipliers` only)."""
        n = max(1, self.lr_scale_steps)
        return {f"rgn/{self.groups[i].name}": v / n for i, v in self.lr_scale_sums.items()}

    def on_train_epoch_start(self) -> None:
        # Lightning 2.x does not call train() per epoch: it restores each submodule's captured mode after
        # validation, so the policy is applied here explicitly (idempotent when the plan did not change)
        self.set_plan(self.strategy.plan(len(self.groups), self.current_epoch))
        self.log_dict({k: float(v) for k, v in self.freeze_stats().items()}, on_step=False, on_epoch=True)

    # ------------------------------------------------------------ steps

    def features(self, inputs: Any) -> torch.Tensor:
        """The head's input: the backbone's (or, on cached prefix outputs, the suffix's) pooled features."""
        if self.suffix is not None:
            return self.suffix(inputs)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self.backbone(inputs)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.head(self.features(inputs))

    def _loss(self, batch: tuple[Any, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, y = batch
        logits = self(inputs)
        return self.criterion(logits, y), logits, y

    def criterion(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.class_weights, label_smoothing=self.optim.label_smoothing)

    def training_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, y = batch
        hooks = captured(self.backbone, self.term_groups) if self.term_groups else contextlib.nullcontext({})
        with hooks as maps:
            features = self.features(inputs)
        logits = self.head(features)
        loss = self.criterion(logits, y)
        if not torch.isfinite(loss):  # stop at once: a diverged run must not end with a finite-looking val/acc
            raise FloatingPointError(f"the training loss became {float(loss.detach())} at epoch {self.current_epoch}, "
                                     f"step {self.global_step}")
        value = float(loss.detach())
        if self.first_loss is None:
            self.first_loss = value
        elif self.divergence_factor is not None and value > self.divergence_factor * max(self.first_loss,
                                                                                       self.chance_loss):
            # a loss this far above where training started (or above chance: a fitted head may start near 0) is no
            # result (an lr far too high): stop like a NaN
            raise FloatingPointError(f"the training loss grew from {self.first_loss:.3g} to {value:.3g} (more than "
                                     f"trainer.divergence_factor={self.divergence_factor:g} times) at epoch "
                                     f"{self.current_epoch}, step {self.global_step}")
        if self.terms:
            loss = loss + self.penalties(inputs, y, logits, features, dict(maps))
        # explicit names: with on_step and on_epoch together Lightning would rename the key to train/loss_epoch
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def penalties(self, inputs: Any, y: torch.Tensor, logits: torch.Tensor, features: torch.Tensor,
                  maps: dict[int, torch.Tensor]) -> torch.Tensor:
        """The regularizers' sum at this step, each logged as train/<name>."""
        source_maps: dict[int, torch.Tensor] = {}
        if self.source:
            with torch.no_grad(), captured(self.source[0], self.term_groups) as source_maps:
                self.source[0](inputs)
        total = torch.zeros((), device=logits.device)
        for term in self.terms:
            step = Step(self, inputs, y, logits, features, maps, source_maps, self.term_state.get(term.name, {}))
            value = term.penalty(step)
            self.log(f"train/{term.name}", value, on_step=False, on_epoch=True, batch_size=len(y))
            total = total + value
        return total

    def validation_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        trainer = self._attached_trainer()
        if not torch.isfinite(loss) and not (trainer is not None and trainer.sanity_checking):
            raise FloatingPointError(f"the validation loss became {float(loss)} at epoch {self.current_epoch}")
        self.val_acc(logits, y)
        self.log("val/loss", loss, on_epoch=True, batch_size=len(y))
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        if self.optim.schedule != "plateau" or self.trainer.sanity_checking:
            return
        acc, p = float(self.val_acc.compute()), self.plateau
        if acc > p["best"]:
            p["best"], p["bad_epochs"] = acc, 0
        else:
            p["bad_epochs"] += 1
            if p["bad_epochs"] > self.optim.plateau_patience:
                p["scale"], p["bad_epochs"] = p["scale"] * self.optim.plateau_factor, 0
                self.set_plan(self.plan)  # re-apply the per-group lrs with the cut

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tl_plateau"] = dict(self.plateau)
        checkpoint["tl_first_loss"] = self.first_loss  # divergence is measured from the run's start, also resumed
        checkpoint["tl_term_state"] = {n: {k: v.cpu() for k, v in s.items()} for n, s in self.term_state.items()}
        # the resolved experiment and class names (set by run()): a checkpoint alone reloads (inference.py)
        checkpoint.update(getattr(self, "run_info", {}))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.plateau.update(checkpoint.get("tl_plateau", {}))
        self.first_loss = checkpoint.get("tl_first_loss", self.first_loss)
        self.term_state.update(checkpoint.get("tl_term_state", {}))

    def on_test_epoch_start(self) -> None:
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (labels, probabilities) per batch

    def test_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        self.test_outputs.append((y.detach().cpu(), logits.detach().float().softmax(-1).cpu()))
        for name, metric in (("acc", self.test_acc), ("acc_top5", self.test_top5), ("f1_macro", self.test_f1)):
            if metric is None:
                continue
            metric(logits, y)
            self.log(f"test/{name}", metric, on_epoch=True, batch_size=len(y))
        self.log("test/loss", loss, on_epoch=True, batch_size=len(y))

    def test_predictions(self) -> dict[str, Any]:
        """The last test pass, example by example in loader order: labels, predicted class, probabilities."""
        labels = torch.cat([y for y, _ in self.test_outputs]).numpy()
        probs = torch.cat([p for _, p in self.test_outputs]).numpy()
        return {"label": labels, "pred": probs.argmax(1), "prob": probs.astype("float32")}

    # ------------------------------------------------------------ optimisation

    def param_groups(self) -> list[dict[str, Any]]:
        """One optimizer param group per layer group, then the head; `name` says which."""
        lr = self.optim.lr
        groups = [{"params": list(g.params.values()), "lr": lr, "name": f"group{g.index}:{g.name}"}
                  for g in self.groups]
        groups.append({"params": list(self.head.parameters()), "lr": lr * self.optim.head_lr_mult, "name": "head"})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        a = self.optim
        if a.name == "sgd":
            opt = torch.optim.SGD(self.param_groups(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
        else:
            opt = torch.optim.AdamW(self.param_groups(), lr=a.lr, weight_decay=a.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(a.warmup_epochs * total / max(1, self.trainer.max_epochs)))

        def factor(i: int):
            # reads the live plan, so an unfreeze changes a group's lr without touching the optimizer
            return lambda step: (schedule_factor(step, warmup, total, a.schedule) *
                                 self.plan.group_lr_scales()[i] * self.plateau["scale"])

        sched = torch.optim.lr_scheduler.LambdaLR(opt, [factor(i) for i in range(len(opt.param_groups))])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
