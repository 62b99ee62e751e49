"""Every freezing strategy on a tiny CNN and a tiny BERT: frozen params bitwise fixed, per-group lrs by formula,
BN policy held; gradual unfreezing follows its schedule; schedulers, L2-SP, LoRA merge and resume."""

import lightning.pytorch as L
import pytest
import torch

from tests.conftest import tiny_experiment
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.pipeline import run
from tl_research.strategies import STRATEGIES as REGISTERED
from tl_research.strategies.apply import is_batchnorm, is_norm

LR = 0.01


class EpochProbe(L.Callback):
    """Per epoch: param snapshots at the first and last step, trainable flags, lrs; BN modes at every step."""

    def __init__(self):
        self.epochs = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.epochs.append({
                "start": {n: p.detach().clone() for n, p in module.named_parameters()},
                "grad": {n: p.requires_grad for n, p in module.named_parameters()},
                "lrs": [g["lr"] for g in trainer.optimizers[0].param_groups],
                "n_param_groups": len(trainer.optimizers[0].param_groups),
                "bn_ok": True,
            })
        for m in module.modules():
            if is_batchnorm(m):
                frozen = not any(p.requires_grad for p in m.parameters(recurse=False))
                self.epochs[-1]["bn_ok"] &= m.training != frozen  # policy `frozen`: eval iff its params are frozen

    def on_train_epoch_end(self, trainer, module):
        self.epochs[-1]["end"] = {n: p.detach().clone() for n, p in module.named_parameters()}


def expected(strategy: str, names: list[str], n: int, epoch: int, module) -> tuple[list[float] | None, set[str]]:
    """Independent statement of each strategy: lr per layer group + head, and which param names train."""
    groups = module.groups
    in_group = {f"backbone.model.{p}": g.index for g in groups for p in g.params}
    head = {x for x in names if x.startswith("head.")}
    if strategy == "linear_probe":
        return [0.0] * n + [LR], head
    if strategy == "full":
        return [LR] * (n + 1), set(names)
    if strategy == "depth":  # depth 1
        return [0.0] + [LR] * (n - 1) + [LR], {x for x in names if in_group.get(x, n) >= 1}
    if strategy == "gradual_unfreeze":  # every epoch one more group from the top, lr / 2.6 per level down
        k = min(n, epoch)
        lrs = [LR / 2.6 ** (n - 1 - i) if i >= n - k else 0.0 for i in range(n)] + [LR]
        return lrs, head | {x for x in names if in_group.get(x, -1) >= n - k}
    if strategy == "lp_ft":  # probe 1 epoch, then everything at ft_lr = LR / 4
        if epoch == 0:
            return [0.0] * n + [LR], head
        return [LR / 4] * (n + 1), set(names)
    if strategy == "llrd":  # decay 0.5
        return [LR * 0.5 ** (n - i) for i in range(n)] + [LR], set(names)
    if strategy == "surgical":  # group -1: the last one
        return [0.0] * (n - 1) + [LR, LR], head | {x for x in names if in_group.get(x) == n - 1}
    if strategy == "bitfit":
        norm_params = {f"{mn}.{p}" for mn, m in module.named_modules() if is_norm(m)
                       for p, _ in m.named_parameters(recurse=False)}
        return [LR] * (n + 1), head | {x for x in names if x.endswith("bias") or x in norm_params}
    if strategy == "lora":
        return [LR] * (n + 1), head | {x for x in names if "lora_" in x}
    if strategy == "auto_rgn":  # everything trains; group lrs follow the step's gradients (tested on their own)
        return None, set(names)
    raise AssertionError(f"{strategy}: a registered strategy this contract does not state yet")


# the SGD probe: this contract is about plans, epochs and lrs (the L-BFGS probe has tests of its own)
OPTIONS = {"linear_probe": {"probe": "sgd"}, "depth": {"depth": 1}, "gradual_unfreeze": {"lr_factor": 2.6},
           "lp_ft": {"ft_lr": LR / 4, "probe": "sgd"},
           "llrd": {"decay": 0.5}, "surgical": {"group": -1}}
STRATEGIES = REGISTERED.names()  # every registered strategy: a new one fails here until `expected` states it


def _tiny(tmp_path, backbone, tiny_bert, **sections):
    if backbone == "bert":
        sections.setdefault("backbone", {"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24})
        sections.setdefault("data", {"name": "rotten-tomatoes", "image_size": None})
    data = tiny_experiment(tmp_path, **sections)
    data["data"].update(train_limit=32, eval_limit=16)
    data["optim"].update(lr=LR, schedule="constant", weight_decay=0.0)
    return data


@pytest.mark.parametrize("backbone", ["cnn", "bert"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_contract(tmp_path, tiny_bert, backbone, strategy):
    probe = EpochProbe()
    exp = load_experiment(data=_tiny(tmp_path, backbone, tiny_bert, freeze={"strategy": strategy,
                                                                            **OPTIONS.get(strategy, {})},
                                     trainer={"max_epochs": 3}))
    result = run(exp, callbacks=[probe])
    module_names = list(probe.epochs[0]["start"])

    from tl_research.pipeline import build_backbone_from, build_module_from  # rebuild to read groups independently
    module = build_module_from(exp, build_backbone_from(exp), 2 if backbone == "bert" else 10)
    n = len(module.groups)
    assert len(probe.epochs) == 3
    for epoch, rec in enumerate(probe.epochs):
        lrs, trains = expected(strategy, module_names, n, epoch, module)
        assert rec["n_param_groups"] == n + 1  # from the very first step, every epoch
        if lrs is None:  # lrs set per step: within [0, LR], the head at LR
            assert rec["lrs"][-1] == pytest.approx(LR) and all(0 <= lr <= LR for lr in rec["lrs"]), f"epoch {epoch}"
        else:
            assert rec["lrs"] == pytest.approx(lrs), f"epoch {epoch}"
        assert {k for k, v in rec["grad"].items() if v} == trains, f"epoch {epoch}"
        changed = {k for k in module_names if not torch.equal(rec["start"][k], rec["end"][k])}
        assert changed <= trains and changed, f"epoch {epoch}: frozen params moved: {changed - trains}"
        assert rec["bn_ok"], f"epoch {epoch}: BN mode does not follow the frozen-BN policy"
    last_trainable = sum(rec_p.numel() for k, rec_p in probe.epochs[-1]["start"].items() if probe.epochs[-1]["grad"][k])
    assert result.metrics["params/trainable"] == last_trainable
    assert result.metrics["freeze/trainable_fraction"] == pytest.approx(last_trainable / result.metrics["params/total"])


def test_lora_on_timm_adapts_1x1_convs_and_merges_exactly(tmp_path):
    from tl_research.backbones import build_backbone
    from tl_research.strategies.lora import add_lora, merge_lora

    backbone = build_backbone("timm/test_efficientnet", "none").eval()
    # by default every Linear and every 1x1 ungrouped conv, and nothing else
    expected = {n for n, m in backbone.model.named_modules() if isinstance(m, torch.nn.Linear) or (
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1)}
    names = add_lora(backbone, rank=4, alpha=8.0, dropout=0.0)
    assert expected and set(names) == expected
    for n, p in backbone.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)  # make the adapters matter
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = backbone(x)
        assert merge_lora(backbone.model) == len(names)
        after = backbone(x)
    assert torch.allclose(before, after, atol=1e-5)
    assert not any("lora_" in n for n, _ in backbone.named_parameters())


def test_lora_merge_export_loads_as_plain_weights(tmp_path):
    exp = load_experiment(data=_tiny(tmp_path, "cnn", None, freeze={"strategy": "lora", "lora": {"merge": True}}))
    result = run(exp)
    exported = result.run_dir / "export" / "backbone.pth"
    assert exported.exists() and (result.run_dir / "export" / "head.pth").exists()
    from tl_research.backbones import build_backbone

    plain = build_backbone("timm/test_efficientnet", str(exported))
    assert plain.weights_source == f"file:{exported.resolve()}"


def test_l2sp_pulls_weights_towards_pretrained(tmp_path):
    def distance(alpha):
        probe = EpochProbe()
        run(load_experiment(data=_tiny(tmp_path, "cnn", None, freeze={"strategy": "full", "l2sp": {"alpha": alpha}},
                                       optim={"lr": 0.05}, trainer={"max_epochs": 2})), callbacks=[probe])
        start, end = probe.epochs[0]["start"], probe.epochs[-1]["end"]
        return sum((end[k] - start[k]).pow(2).sum().item() for k in start if k.startswith("backbone."))

    assert distance(5.0) < 0.5 * distance(0.0)


@pytest.mark.parametrize("schedule", ["one_cycle", "cosine", "slanted_triangular"])
def test_schedulers_across_unfreezing_keep_group_ratios(tmp_path, schedule):
    class StepLRs(L.Callback):
        def __init__(self):
            self.rows = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.rows.append((trainer.current_epoch, [g["lr"] for g in trainer.optimizers[0].param_groups]))

    probe = StepLRs()
    data = _tiny(tmp_path, "cnn", None, freeze={"strategy": "gradual_unfreeze", "lr_factor": 2.0},
                 trainer={"max_epochs": 4})
    data["optim"].update(schedule=schedule, warmup_epochs=1.0 if schedule == "cosine" else 0.0)
    run(load_experiment(data=data), callbacks=[probe])
    n = len(probe.rows[0][1]) - 1
    head = [lrs[-1] for _, lrs in probe.rows]
    for epoch, lrs in probe.rows:
        for i in range(n):  # unfrozen group i runs at head lr / 2^(levels below the top); frozen ones at 0
            want = lrs[-1] / 2.0 ** (n - 1 - i) if i >= n - min(n, epoch) else 0.0
            assert lrs[i] == pytest.approx(want, rel=1e-9, abs=1e-15)
    peak = head.index(max(head))
    assert 0 < peak < len(head) - 1 and head[-1] < max(head)  # warm-up/ramp, then decay, across every unfreeze


def test_slanted_triangular_is_ulmfits_formula():
    """Howard & Ruder 2018, eq. 3, written out independently: T = 1000, cut_frac 0.1, ratio 32."""
    from tl_research.training.optim import schedule_factor

    def stlr(t, total=1000):
        cut = int(total * 0.1)
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / 0.1 - 1))
        return (1 + p * 31) / 32

    for t in (0, 1, 50, 99, 100, 101, 550, 999):
        assert schedule_factor(t, 0, 1000, "slanted_triangular") == pytest.approx(stlr(t)), t
    assert schedule_factor(100, 0, 1000, "slanted_triangular") == 1.0


def test_plateau_cuts_every_group_when_val_acc_stalls(tmp_path):
    class EpochLRs(L.Callback):
        def __init__(self):
            self.lrs = []

        def on_train_epoch_end(self, trainer, module):
            self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    probe = EpochLRs()
    data = _tiny(tmp_path, "cnn", None, freeze={"strategy": "depth", "depth": 2}, trainer={"max_epochs": 4})
    data["optim"].update(schedule="plateau", lr=1e-12, plateau_patience=0, plateau_factor=0.5)
    run(load_experiment(data=data), callbacks=[probe])
    heads = [lrs[-1] for lrs in probe.lrs]
    assert heads[0] == pytest.approx(1e-12)  # lr too small to move val/acc: it stalls after epoch 0
    assert heads[1:] == pytest.approx([0.5e-12, 0.25e-12, 0.125e-12])
    assert all(lrs[0] == 0.0 for lrs in probe.lrs)  # frozen groups stay at 0


class Crash(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resume_mid_unfreeze_equals_uninterrupted_run(tmp_path):
    def exp():
        return load_experiment(data=_tiny(tmp_path, "cnn", None, freeze={"strategy": "gradual_unfreeze"},
                                          optim={"schedule": "cosine"},
                                          trainer={"max_epochs": 4, "deterministic": True},
                                          head={"dropout": 0.2}))

    whole_probe, resumed_probe = EpochProbe(), EpochProbe()
    whole = run(exp(), tmp_path / "whole", callbacks=[whole_probe]).metrics
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(exp(), tmp_path / "resumed", callbacks=[Crash(2)])
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = run(exp(), tmp_path / "resumed", callbacks=[resumed_probe]).metrics
    assert len(resumed_probe.epochs) == 2  # epochs 2 and 3 only
    for a, b in zip(whole_probe.epochs[2:], resumed_probe.epochs):
        assert a["grad"] == b["grad"] and a["lrs"] == b["lrs"]
        assert all(torch.equal(a["start"][k], b["start"][k]) for k in a["start"])
        assert all(torch.equal(a["end"][k], b["end"][k]) for k in a["end"])
    for key in ("test/acc", "test/f1_macro", "test/loss", "val/acc", "train/loss"):
        assert resumed[key] == whole[key], key
    with pytest.raises(UserError, match="already holds a finished run"):
        run(exp(), tmp_path / "resumed")


def test_resume_refuses_a_different_config(tmp_path):
    data = _tiny(tmp_path, "cnn", None, trainer={"max_epochs": 3})
    with pytest.raises(RuntimeError):
        run(load_experiment(data=data), tmp_path / "r", callbacks=[Crash(1)])
    data["optim"]["lr"] = 0.5
    with pytest.raises(UserError, match="unfinished run of a different config"):
        run(load_experiment(data=data), tmp_path / "r")


def test_surgical_span_trains_consecutive_groups():
    from tl_research.strategies.catalogue import Surgical

    first = Surgical(group=0, span=3).resolve(6, LR)
    assert first.plan(6, 0).trainable == (True, True, True, False, False, False)
    last = Surgical(group=-2, span=2).resolve(6, LR)
    assert last.plan(6, 3).trainable == (False, False, False, False, True, True) and last.frozen_prefix(6) == 4


@pytest.mark.parametrize("overrides, message", [
    (["freeze.strategy=lorra"], "freeze.strategy: unknown strategy 'lorra'"),
    (["freeze.strategy=lora", "freeze.lora.rank=0"], "freeze.lora.rank: 0 is out of range (allowed: >= 1)"),
    (["freeze.strategy=surgical", "freeze.group=6"], "freeze.group: 6 is out of range for the backbone's 6"),
    (["freeze.strategy=surgical"], "freeze.group: strategy surgical needs"),
    (["freeze.strategy=surgical", "freeze.group=4", "freeze.span=3"], "freeze.span: 3 groups from group 4 run past"),
    (["freeze.strategy=lora", "freeze.lora.targets=attn_q,attn_v"],
     "freeze.lora.targets: ['attn_q', 'attn_v'] match no"),
])
def test_bad_strategy_options_exit_2(tmp_path, capsys, overrides, message):
    import yaml

    from tl_research.cli.main import main

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    assert main(["fit", str(path)] + [a for o in overrides for a in ("--set", o)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()


def test_lp_ft_keeps_ft_depth_groups_frozen_while_fine_tuning():
    from tl_research.errors import UserError
    from tl_research.strategies.catalogue import LinearProbeThenFinetune

    s = LinearProbeThenFinetune(probe_epochs=2, ft_lr=1e-4, ft_depth=3).resolve(5, 1e-3)
    assert s.plan(5, 1).trainable == (False,) * 5  # the probe
    plan = s.plan(5, 2)
    assert plan.trainable == (False, False, False, True, True)
    assert plan.group_lr_scales() == pytest.approx([0, 0, 0, 0.1, 0.1, 0.1])  # the head too moves at ft_lr
    assert s.frozen_prefix(5) == 3
    with pytest.raises(UserError, match="freeze.ft_depth: 6 is more than"):
        LinearProbeThenFinetune(ft_depth=6).resolve(5, 1e-3)


def test_auto_rgn_multipliers_from_relative_gradient_norms():
    from types import SimpleNamespace

    from tl_research.strategies.catalogue import AutoRGN

    def group(weight, grad):
        p = torch.nn.Parameter(torch.full((4,), weight))
        p.grad = torch.full((4,), grad)
        return SimpleNamespace(params={"w": p})

    frozen = SimpleNamespace(params={"w": torch.nn.Parameter(torch.ones(2), requires_grad=False)})
    scales = AutoRGN().lr_multipliers([group(1.0, 0.1), group(2.0, 0.8), frozen, group(4.0, 0.2)])
    assert scales == pytest.approx([0.25, 1.0, 0.0, 0.125])  # RGN 0.1, 0.4, -, 0.05 over the largest


def test_auto_rgn_scales_each_groups_step(tmp_path):
    """With plain SGD the applied step of a group is lr_eff * grad: lr_eff must be lr * schedule * RGN / max RGN."""

    class Spy(L.Callback):
        def __init__(self):
            self.seen = None

        def on_before_optimizer_step(self, trainer, module, optimizer):
            if self.seen is None:
                self.seen = ([g.params[next(iter(g.params))].detach().clone() for g in module.groups],
                             [g.params[next(iter(g.params))].grad.clone() for g in module.groups],
                             [pg["lr"] for pg in optimizer.param_groups],
                             module.strategy.lr_multipliers(module.groups))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.seen is not None and len(self.seen) == 4:
                before, grads, lrs, scales = self.seen
                after = [g.params[next(iter(g.params))].detach() for g in module.groups]
                applied = [float(((b - a) * g).sum() / g.pow(2).sum()) for b, a, g in zip(before, after, grads)]
                self.seen = (applied, [lr * s for lr, s in zip(lrs, scales)], scales)

    spy = Spy()
    exp = load_experiment(data=tiny_experiment(tmp_path, freeze={"strategy": "auto_rgn"},
                                               optim={"name": "sgd", "momentum": 0.0, "weight_decay": 0.0,
                                                      "lr": 0.05, "schedule": "constant"},
                                               trainer={"max_epochs": 1}))
    result = run(exp, tmp_path / "rgn", callbacks=[spy])
    applied, expected, scales = spy.seen
    assert applied == pytest.approx(expected, rel=1e-3, abs=1e-9)
    assert max(scales) == pytest.approx(1.0) and min(scales) < 0.5  # the groups did get different lrs
    rgn = {k: v for k, v in result.metrics.items() if k.startswith("rgn/")}
    assert len(rgn) == len(scales) and all(0 <= v <= 1 for v in rgn.values())
