"""`backbone.layers`: which hidden states of an HF encoder are the features (BERT's Table 7 options)."""

from typing import get_args

import pytest
import torch
import yaml

from tests.conftest import tiny_experiment
from tl_research.backbones import build_backbone
from tl_research.backbones.hf import HFBackbone
from tl_research.backbones.options import LayerChoice
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.pipeline import run
from tl_research.training.heads import ScalarMix


@pytest.fixture(scope="module")
def four_layer(tiny_bert):
    """A 4-layer random BERT with the tiny tokenizer (the four-layer options need four layers)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    return BertModel(config).eval(), AutoTokenizer.from_pretrained(str(tiny_bert))


def _mean(h, mask):
    m = mask.unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1)


def test_each_layer_choice_matches_the_models_own_hidden_states(four_layer):
    model, tok = four_layer
    batch = dict(tok(["a good film", "the plot was dull and long"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"]
        expected = {
            "last": _mean(states[-1], mask), "second_to_last": _mean(states[-2], mask),
            "embeddings": _mean(states[0], mask), "sum_last_four": _mean(sum(states[-4:]), mask),
            "concat_last_four": torch.cat([_mean(h, mask) for h in states[-4:]], -1),
            "weighted": torch.stack([_mean(h, mask) for h in states], 1)}
        assert set(expected) == set(get_args(LayerChoice))
        for layers, ref in expected.items():
            bb = HFBackbone("hf/x", model, tok, "none", "mean", 32, layers)
            out = bb(batch)
            assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5), layers
            assert bb.num_features == out.shape[-1]
        mix = ScalarMix(5)
        assert torch.allclose(mix(expected["weighted"]), expected["weighted"].mean(1), atol=1e-6)  # starts as a mean


def test_runs_with_each_layer_choice(tmp_path, tiny_bert):
    """The linear probe trains on cached features of the chosen layers; a learned mix trains its weights."""
    bert = {"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24}

    def exp(layers, **more):
        return load_experiment(data=tiny_experiment(
            tmp_path, backbone={**bert, "layers": layers}, freeze={"strategy": "linear_probe"},
            data={"name": "rotten-tomatoes", "image_size": None, "train_limit": 48, "eval_limit": 32}, **more))

    keys = set()
    for layers in ("last", "second_to_last", "embeddings"):
        m = run(exp(layers), tmp_path / layers).metrics
        assert m["cache/used"] and m["probe/solver"] == "lbfgs"
        keys.add(m["cache/key"])
    assert len(keys) == 3  # each choice has its own cached rows
    cached = run(exp("weighted", optim={"lr": 0.05}), tmp_path / "w").metrics
    assert cached["cache/used"] and cached["probe/solver"] == "sgd"
    ckpt = torch.load(tmp_path / "w" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert not torch.allclose(ckpt["head.0.weights"], torch.zeros(3))  # the mix was trained
    plain = run(exp("weighted", optim={"lr": 0.05}, cache={"mode": "off"}), tmp_path / "w2").metrics
    assert not plain["cache/used"]
    for key in ("test/acc", "val/acc", "train/loss"):
        assert cached[key] == pytest.approx(plain[key], abs=1e-4), key


def test_layer_choice_errors(tmp_path, tiny_bert, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    cases = [
        (["--set", "backbone.layers=second_to_last"], "backbone.layers: second_to_last selects hidden states of hf"),
        (["--set", "backbone.layers=third"], "backbone.layers: 'third' is not allowed"),
        ([f"--set=backbone.name=hf/{tiny_bert}", "--set=data.name=rotten-tomatoes", "--set=data.image_size=null",
          "--set=backbone.layers=concat_last_four"], "needs 4 transformer layers"),
        ([f"--set=backbone.name=hf/{tiny_bert}", "--set=data.name=rotten-tomatoes", "--set=data.image_size=null",
          "--set=backbone.layers=weighted", "--set=freeze.strategy=linear_probe", "--set=freeze.probe=lbfgs"],
         "freeze.probe: lbfgs fits a linear head on fixed features"),
    ]
    for args, message in cases:
        assert main(["fit", str(cfg), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_minilm_second_to_last_layer_is_the_models_own():
    """Real path: the offline MiniLM's layer-5 (of 6) states, mean-pooled, are what layers=second_to_last gives."""
    bb = build_backbone("hf/all-MiniLM-L6-v2", "offline", layers="second_to_last", max_length=32)
    batch = dict(bb.preprocessing.tokenizer(["a quietly moving film", "dull"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        states = bb.model(**batch, output_hidden_states=True).hidden_states
        assert len(states) == 7
        assert torch.allclose(bb.eval()(batch), _mean(states[5], batch["attention_mask"]), atol=1e-5)
