"""Transfer regularizers: L2-SP, DELTA and BSS against their papers' formulas computed here by other means (numpy's
SVD, timm's own forward_features and pooling), the old freeze.l2sp keys giving the same run as regularize.l2sp, a
DELTA run keeping the feature cache off with its reason, a resumed run keeping its channel attention, and bad
options as one line."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_experiment
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.pipeline import build_backbone_from, build_module_from, run
from tl_research.training.probe import fit_logistic
from tl_research.training.regularizers import Step


def _tiny(tmp_path, **sections):
    data = tiny_experiment(tmp_path, **sections)
    data["data"].update(train_limit=32, eval_limit=16)
    data["trainer"].update(max_epochs=1)
    return data


def _module(tmp_path, **sections):
    exp = load_experiment(data=_tiny(tmp_path, **sections))
    return build_module_from(exp, build_backbone_from(exp), 10)


def _step(module, inputs, **given):
    features = module.features(inputs)
    return Step(module, inputs, torch.zeros(len(inputs), dtype=torch.long), module.head(features), features,
                given.get("maps", {}), given.get("source_maps", {}), given.get("state", {}))


@pytest.mark.parametrize("keys", [{"freeze": {"strategy": "depth", "depth": 2, "l2sp": {"alpha": 0.3, "beta": 0.2}}},
                                  {"freeze": {"strategy": "depth", "depth": 2},
                                   "regularize": {"l2sp": {"alpha": 0.3, "beta": 0.2}}}],
                         ids=["freeze.l2sp", "regularize.l2sp"])
def test_l2sp_is_the_papers_formula_under_either_key(tmp_path, keys):
    module = _module(tmp_path, **keys)
    (term,) = module.terms
    x = torch.rand(2, 3, 32, 32)
    head_sq = sum(p.pow(2).sum() for p in module.head.parameters()).item()
    assert term.penalty(_step(module, x)).item() == pytest.approx(0.2 * head_sq, rel=1e-5)  # theta == theta_0
    trainable = [p for g in module.groups[2:] for p in g.params.values()]
    frozen = [p for g in module.groups[:2] for p in g.params.values()]
    with torch.no_grad():
        for p in trainable + frozen:
            p.add_(0.01)
    shift = sum(p.numel() for p in trainable) * 0.01 ** 2
    assert term.penalty(_step(module, x)).item() == pytest.approx(0.3 * shift + 0.2 * head_sq, rel=1e-4)


def test_the_old_l2sp_keys_give_the_same_run_as_the_new_ones(tmp_path):
    freeze = {"strategy": "full"}
    old = run(load_experiment(data=_tiny(tmp_path / "old", freeze={**freeze, "l2sp": {"alpha": 0.5, "beta": 0.1}})))
    new = run(load_experiment(data=_tiny(tmp_path / "new", freeze=freeze,
                                         regularize={"l2sp": {"alpha": 0.5, "beta": 0.1}})))
    for key in ("val/loss", "val/acc", "test/acc", "train/l2sp"):
        assert old.metrics[key] == new.metrics[key], key
    assert new.metrics["train/l2sp"] > 0
    with pytest.raises(UserError, match="freeze.l2sp: set here and as regularize.l2sp"):
        load_experiment(data=_tiny(tmp_path, freeze={"l2sp": {"alpha": 0.5}}, regularize={"l2sp": {"alpha": 0.5}}))


def test_bss_is_eta_times_the_k_smallest_squared_singular_values(tmp_path):
    module = _module(tmp_path, regularize={"bss": {"eta": 0.01, "k": 2}})
    (term,) = module.terms
    step = _step(module, torch.rand(6, 3, 32, 32))
    sigma = np.linalg.svd(step.features.detach().double().numpy(), compute_uv=False)
    expected = 0.01 * float(np.sort(sigma)[:2] @ np.sort(sigma)[:2])
    assert term.penalty(step).item() == pytest.approx(expected, rel=1e-4)
    assert expected > 0


def test_delta_is_the_attention_weighted_feature_map_distance_to_theta0(tmp_path):
    module = _module(tmp_path, regularize={"delta": {"alpha": 0.5, "beta": 0.001, "attention_batches": 2}})
    (term,) = module.terms
    assert module.term_groups == (len(module.groups) - 1,)  # the default: the last group's output
    torch.manual_seed(0)
    batches = [(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(3)]
    source = module.source[0]
    state = term.prepare(source, batches, 10)

    # the attention by hand: the last group's output is timm's forward_features; zeroing channel j of it zeroes
    # column j of the pooled features, scored by a linear classifier fitted on theta_0's pooled features
    model0 = source.model
    with torch.no_grad():
        pooled = [model0.forward_head(model0.forward_features(x), pre_logits=True).double() for x, _ in batches[:2]]
    w, b, _ = fit_logistic(torch.cat(pooled), torch.cat([y for _, y in batches[:2]]), 10, 1e-3)
    rise = np.zeros(pooled[0].shape[1])
    for f, (_, y) in zip(pooled, batches[:2]):
        base = F.cross_entropy(f @ w.T + b, y).item()
        for j in range(len(rise)):
            g = f.clone()
            g[:, j] = 0
            rise[j] += (F.cross_entropy(g @ w.T + b, y).item() - base) / 2
    z = (rise - rise.mean()) / rise.std(ddof=1) / 5.0  # standardised, temperature 5 (as TLlib)
    attention = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    (key,) = state
    assert np.allclose(state[key].numpy(), attention, atol=1e-5)
    assert attention.max() > 1.2 / len(attention)  # channels differ: not the uniform weights

    # the penalty by hand, after the trained backbone moved away from theta_0
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = batches[2][0]
    module.term_state[term.name] = state
    module.eval()  # (train-mode BatchNorm would change its statistics between the two forward passes)
    with torch.no_grad():
        fm = module.backbone.model.forward_features(x)
        fm0 = model0.forward_features(x)
    per_channel = (fm - fm0).pow(2).flatten(2).sum(2).mean(0).numpy()
    head_sq = sum(p.pow(2).sum() for p in module.head.parameters()).item()
    expected = 0.5 * float(attention @ per_channel) + 0.001 * head_sq
    with torch.no_grad():
        got = module.penalties(x, batches[2][1], module(x), module.features(x), _maps(module, x))
    assert got.item() == pytest.approx(expected, rel=1e-4)
    assert 0.5 * float(attention @ per_channel) > 0.1 * expected  # the feature-map part is not negligible here


def _maps(module, x):
    from tl_research.training.regularizers.outputs import captured

    with captured(module.backbone, module.term_groups) as maps:
        module.features(x)
    return dict(maps)


def test_delta_without_attention_weighs_every_channel_one(tmp_path):
    module = _module(tmp_path, regularize={"delta": {"attention": False, "layers": [2, -1]}})
    (term,) = module.terms
    state = term.prepare(module.source[0], [(torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))], 10)
    assert sorted(state) == ["w2", f"w{len(module.groups) - 1}"]
    assert all(torch.equal(v, torch.ones_like(v)) for v in state.values())


def test_a_delta_run_trains_on_raw_inputs_says_why_and_resumes_with_its_attention(tmp_path):
    data = _tiny(tmp_path, freeze={"strategy": "depth", "depth": 2},
                 regularize={"delta": {"alpha": 0.01, "attention_batches": 1}})
    data["trainer"].update(max_epochs=2)
    result = run(load_experiment(data=data))
    m = result.metrics
    assert m["cache/used"] is False and m["cache/reason"].startswith("regularize.delta compares layer-group outputs")
    assert m["train/delta"] > 0
    ckpt = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    (weights,) = ckpt["tl_term_state"]["delta"].values()
    assert weights.sum().item() == pytest.approx(1.0, rel=1e-5)  # a softmax over the channels
    # the same run without the term uses the cache: the term, not the strategy, turned it off
    plain = run(load_experiment(data={**data, "regularize": None}))
    assert plain.metrics["cache/used"] is True


@pytest.mark.parametrize(("regularize", "message"), [
    ({"nope": {}}, "regularize.nope: unknown regularizer 'nope' (known: bss, delta, l2sp)"),
    ({"bss": {"eta": -1}}, "regularize.bss.eta"),
    ({"bss": {"kk": 1}}, "regularize.bss.kk"),
    ([1], "regularize: a mapping of regularizer names to their options"),
])
def test_bad_regularizer_options_are_one_line(tmp_path, regularize, message):
    with pytest.raises(UserError, match=None) as err:
        load_experiment(data=_tiny(tmp_path, regularize=regularize))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_delta_group_outside_the_backbone_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"regularize.delta.layers: 40 is not a layer group of this backbone"):
        _module(tmp_path, regularize={"delta": {"layers": [40]}})


@pytest.mark.slow
def test_delta_and_bss_train_the_real_mobilenetv2_with_a_channel_attention_of_its_own(tmp_path):
    """Real weights and data: full fine-tuning of the offline MobileNetV2 on Animal-MNIST with DELTA and BSS; the
    channel attention DELTA measured on the pretrained model is not uniform (some channels matter more to this task
    than others), and both terms are part of the training loss."""
    from pathlib import Path

    base = Path(__file__).parents[2] / "experiments" / "mobilenetv2_animal_full.yaml"
    keys = [f"output_dir={tmp_path}", "tracking.mode=disabled", "trainer.progress_bar=false", "data.train_limit=96",
            "data.eval_limit=48", "data.image_size=32", "data.batch_size=8", "trainer.max_epochs=1",
            "trainer.patience=null", "regularize.delta.alpha=1.0", "regularize.delta.attention_batches=1",
            "regularize.bss.eta=0.001"]
    kept = run(load_experiment(base, keys))
    m = kept.metrics
    print(f"train/delta {m['train/delta']:.4g}, train/bss {m['train/bss']:.4g}, test/acc {m['test/acc']:.3f}")
    assert m["train/delta"] > 0 and m["train/bss"] > 0 and m["cache/used"] is False
    attention = torch.load(kept.run_dir / "checkpoints" / "last.ckpt", weights_only=False)["tl_term_state"]["delta"]
    (weights,) = attention.values()
    assert len(weights) == 1280 and weights.sum().item() == pytest.approx(1.0, rel=1e-4)
    assert weights.max().item() > 2 / len(weights)
