import lightning.pytorch as L
import pytest
import torch

from tests.conftest import tiny_experiment
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.pipeline import run
from tl_research.strategies import FreezePlan
from tl_research.strategies.apply import is_batchnorm
from tl_research.strategies.catalogue import Depth


class Probe(L.Callback):
    """Records, at every training step, BN modes, optimizer structure and lrs; snapshots params around fit."""

    def __init__(self):
        self.bn_training, self.param_groups, self.lrs, self.grad_flags, self.dropout = [], [], [], [], []

    def on_train_start(self, trainer, module):
        self.before = {n: p.detach().clone() for n, p in module.named_parameters()}
        self.buffers_before = {n: b.clone() for n, b in module.named_buffers()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.dropout.append({n: m.training for n, m in module.named_modules() if isinstance(m, torch.nn.Dropout)})
        self.bn_training.append([[m.training for m in g.modules.values() if is_batchnorm(m)] for g in module.groups])
        opt = trainer.optimizers[0]
        self.param_groups.append(len(opt.param_groups))
        self.lrs.append([g["lr"] for g in opt.param_groups])
        self.grad_flags.append([all(p.requires_grad for p in g.params.values()) for g in module.groups])

    def on_train_end(self, trainer, module):
        self.after = {n: p.detach().clone() for n, p in module.named_parameters()}
        self.buffers_after = {n: b.clone() for n, b in module.named_buffers()}


def _fit(tmp_path, **sections):
    probe = Probe()
    exp = load_experiment(data=tiny_experiment(tmp_path, **sections))
    result = run(exp, callbacks=[probe])
    return probe, result


def _group_of(module_params, groups):
    return {id(p): g.index for g in groups for p in g.params.values()}


def test_depth_3_freezes_exactly_groups_0_to_2(tmp_path):
    probe, result = _fit(tmp_path, freeze={"strategy": "depth", "depth": 3})
    n = 6  # timm test_efficientnet: stem + 4 stages + head conv
    assert result.metrics["freeze/depth"] == 3
    # one param group per layer group + head, from the very first step
    assert probe.param_groups and set(probe.param_groups) == {n + 1}
    # frozen groups get lr 0, the others a positive lr, at every step
    assert all(all(lr == 0.0 for lr in lrs[:3]) and all(lr > 0 for lr in lrs[3:]) for lrs in probe.lrs)
    assert all(flags == [False] * 3 + [True] * (n - 3) for flags in probe.grad_flags)
    # BN layers of frozen groups are in eval mode during training steps; the others train
    for step in probe.bn_training:
        assert all(not t for g in step[:3] for t in g) and any(step[:3])
        assert all(t for g in step[3:] for t in g) and any(step[3:])
    # frozen parameters and BN running stats are bitwise unchanged; trainable ones moved
    frozen_prefixes = ("backbone.model.conv_stem", "backbone.model.bn1", "backbone.model.blocks.0.",
                       "backbone.model.blocks.1.")
    changed = {n for n in probe.before if not torch.equal(probe.before[n], probe.after[n])}
    frozen = {n for n in probe.before if n.startswith(frozen_prefixes)}
    assert frozen and not (changed & frozen)
    assert "head.1.weight" in changed and any(n.startswith("backbone.model.conv_head") for n in changed)
    stats = [n for n in probe.buffers_before if n.startswith(frozen_prefixes) and "running_mean" in n]
    assert stats and all(torch.equal(probe.buffers_before[n], probe.buffers_after[n]) for n in stats)
    moving = [n for n in probe.buffers_before if n.startswith("backbone.model.conv_head") or "bn2.running_mean" in n]
    assert any(not torch.equal(probe.buffers_before[n], probe.buffers_after[n]) for n in moving)


def test_linear_probe_trains_only_the_head(tmp_path):
    """With SGD epochs only the head moves and BN stays in eval mode; with the converged probe (the default on
    cached features) the head is solved before training and no training step runs at all."""
    probe, result = _fit(tmp_path, name="sgd", freeze={"strategy": "linear_probe", "probe": "sgd"})
    changed = {n for n in probe.before if not torch.equal(probe.before[n], probe.after[n])}
    assert changed == {"head.1.weight", "head.1.bias"}
    assert result.metrics["params/trainable"] == sum(probe.before[n].numel() for n in changed)
    assert result.metrics["freeze/depth"] == len(probe.grad_flags[0])
    assert all(not t for step in probe.bn_training for g in step for t in g)
    solved, converged = _fit(tmp_path, name="lbfgs", freeze={"strategy": "linear_probe"})
    assert converged.metrics["probe/solver"] == "lbfgs" and not solved.param_groups  # no training step
    assert converged.metrics["params/trainable"] == result.metrics["params/trainable"]
    assert converged.metrics["freeze/depth"] == result.metrics["freeze/depth"]


def test_full_bn_policies(tmp_path):
    probe, _ = _fit(tmp_path, freeze={"strategy": "full", "bn": "eval_stats"})
    assert all(not t for step in probe.bn_training for g in step for t in g)  # stats fixed everywhere
    changed = {n for n in probe.before if not torch.equal(probe.before[n], probe.after[n])}
    assert "backbone.model.bn1.weight" in changed  # ... but BN affine params train
    stats = [n for n in probe.buffers_before if "running_mean" in n]
    assert all(torch.equal(probe.buffers_before[n], probe.buffers_after[n]) for n in stats)

    probe, _ = _fit(tmp_path, freeze={"strategy": "depth", "depth": 2, "bn": "train"})
    assert all(t for step in probe.bn_training for g in step for t in g)  # plain PyTorch behaviour, explicit
    assert not torch.equal(probe.buffers_before["backbone.model.bn1.running_mean"],
                           probe.buffers_after["backbone.model.bn1.running_mean"])


def test_depth_fraction_and_validation():
    assert Depth(fraction=0.5).resolve(18, 1e-3).plan(18, 0).depth == 9
    assert Depth(depth=18).resolve(18, 1e-3).plan(18, 0).depth == 18
    with pytest.raises(UserError, match=r"freeze.depth: 19 is more than the backbone's 18 layer groups \(allowed: 0"):
        Depth(depth=19).resolve(18, 1e-3)
    with pytest.raises(UserError, match="exactly one of freeze.depth"):
        Depth().resolve(18, 1e-3)
    with pytest.raises(UserError, match="freeze.strategy: unknown strategy 'lorax'"):
        load_experiment(data={"freeze": {"strategy": "lorax"}})


def test_plan_lr_scales_zero_frozen_groups():
    plan = FreezePlan((False, True, True), (1.0, 0.5, 1.0), head_lr_scale=2.0)
    assert plan.depth == 1
    assert plan.group_lr_scales() == [0.0, 0.5, 1.0, 2.0]


def test_text_backbone_depth_freezes_embeddings_and_first_layer(tmp_path, tiny_bert):
    probe, result = _fit(tmp_path, backbone={"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 32},
                         data={"name": "rotten-tomatoes", "image_size": None},
                         freeze={"strategy": "depth", "depth": 2})
    assert probe.param_groups[0] == 4  # embeddings, layer 0, layer 1, head
    # from_pretrained hands over an eval-mode model: dropout must still be on while training, in the groups that
    # train; the frozen groups (embeddings, layer 0) compute a fixed function, dropout off
    frozen = ("backbone.model.embeddings", "backbone.model.encoder.layer.0.")
    for step in probe.dropout:
        assert all(on != n.startswith(frozen) for n, on in step.items()), step
        assert any(n.startswith("backbone.model.encoder.layer.1.") for n in step)
    changed = {n for n in probe.before if not torch.equal(probe.before[n], probe.after[n])}
    assert not any(n.startswith(("backbone.model.embeddings", "backbone.model.encoder.layer.0.")) for n in changed)
    assert any(n.startswith("backbone.model.encoder.layer.1.") for n in changed)
    assert result.metrics["freeze/depth"] == 2 and result.metrics["weights_source"].startswith("file:")
