"""`tlr export`: every format loads back in the tool it is for, with the same logits (1e-5)."""

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.data.registry import load_dataset
from tl_research.lifecycle.inference import load_run
from tl_research.run import run


def _images(loaded, n=6):
    from tl_research.data.datamodule import input_collates

    collate, _ = input_collates(loaded.model.backbone.preprocessing, loaded.experiment.data)
    raw = load_dataset("animal-mnist")
    return collate([(raw.inputs[i], 0) for i in range(n)])[0]


def _texts(loaded):
    tok = loaded.model.backbone.preprocessing.tokenizer
    return dict(tok(["a good film", "dull and long", "the plot"], padding=True, return_tensors="pt"))


def _bert_run(tmp_path, tiny_bert, **sections):
    """One epoch of the tiny BERT on a few Rotten Tomatoes reviews; returns the run folder."""
    base = {"backbone": {"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24},
            "data": {"name": "rotten-tomatoes", "image_size": None, "train_limit": 32, "eval_limit": 16},
            "trainer": {"max_epochs": 1}}
    return run(load_experiment(data=tiny_experiment(tmp_path, **base, **sections)), tmp_path / "r").run_dir


@pytest.fixture
def timm_run(tmp_path):
    return run(load_experiment(data=tiny_experiment(tmp_path)), tmp_path / "r").run_dir


def test_safetensors_round_trip(tmp_path, timm_run):
    out = tmp_path / "st"
    assert main(["export", str(timm_run), "--format", "safetensors", "--out", str(out)]) == 0
    original, again = load_run(timm_run), load_run(out)
    x = _images(original)
    with torch.no_grad():
        assert torch.allclose(original.model(x), again.model(x), atol=1e-5)
    assert again.classes == original.classes == json.loads((out / "classes.json").read_text())


def test_timm_round_trip(tmp_path, timm_run):
    out = tmp_path / "timm"
    assert main(["export", str(timm_run), "--format", "timm", "--out", str(out)]) == 0
    loaded = load_run(timm_run)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(loaded.classes))
    model.load_state_dict(load_file(str(out / "model.safetensors")))  # strict: every key in timm's own names
    model.eval()
    x = _images(loaded)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.model(x), atol=1e-5)


def test_hf_round_trip(tmp_path, tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    run_dir = _bert_run(tmp_path, tiny_bert)
    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out)]) == 0
    loaded = load_run(run_dir)
    encoder = AutoModel.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    batch = dict(tok(["a good film", "dull and long", "the plot"], padding=True, return_tensors="pt"))
    head = torch.nn.Linear(encoder.config.hidden_size, len(loaded.classes))
    state = load_file(str(out / "head.safetensors"))
    head.load_state_dict({k.removeprefix("1."): v for k, v in state.items()})
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        logits = head((hidden * mask).sum(1) / mask.sum(1))
        assert torch.allclose(logits, loaded.model(batch), atol=1e-5)


def test_peft_round_trip(tmp_path, tiny_bert):
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    run_dir = _bert_run(tmp_path, tiny_bert, freeze={"strategy": "lora", "lora": {"rank": 4}}, optim={"lr": 0.05})
    out = tmp_path / "peft"
    assert main(["export", str(run_dir), "--format", "peft", "--out", str(out)]) == 0
    loaded = load_run(run_dir)
    config = LoraConfig.from_pretrained(str(out))
    assert config.r == 4
    from tl_research.backbones import build_backbone

    fresh = build_backbone(f"hf/{tiny_bert}", "offline", max_length=24)  # the pretrained base, no adapter
    inject_adapter_in_model(config, fresh.model)
    set_peft_model_state_dict(fresh.model, load_file(str(out / "adapter_model.safetensors")))
    head = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(fresh.num_features, len(loaded.classes)))
    head.load_state_dict(load_file(str(out / "head.safetensors")))
    batch = _texts(loaded)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(head(fresh(batch)), loaded.model(batch), atol=1e-5)
        lora_b = [v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k]
        assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # the trained adapter, not its zero init


def test_export_bad_input(tmp_path, timm_run, capsys):
    for args, message in ((["--format", "onnx"], "--format: 'onnx' is not a format"),
                          (["--format", "hf"], "--format: hf exports HF encoders"),
                          (["--format", "peft"], "--format: peft exports LoRA adapters")):
        assert main(["export", str(timm_run), *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["export", str(tmp_path / "nosuch"), "--format", "timm"]) == 2
    assert "run: " in capsys.readouterr().err
    mlp = run(load_experiment(data=tiny_experiment(tmp_path, head={"type": "mlp", "hidden": 8})), tmp_path / "m")
    assert main(["export", str(mlp.run_dir), "--format", "timm", "--out", str(tmp_path / "y")]) == 2
    assert "this run's head is an MLP" in capsys.readouterr().err
    assert np.isfinite(mlp.metrics["test/acc"])


def test_every_registered_format_writes_whole_or_refuses_before_writing(tmp_path, timm_run):
    """The contract of the format registry, on a timm run: a format either writes every file it names (with the
    class names) or refuses with one line before the folder exists."""
    from tl_research.errors import UserError
    from tl_research.lifecycle.export import export, formats

    loaded = load_run(timm_run)
    wrote = set()
    for fmt in formats():
        out = tmp_path / "all" / fmt.name
        try:
            files = export(loaded, fmt.name, out)
        except UserError as exc:
            assert str(exc).startswith("--format: ") and not out.exists(), fmt.name
            continue
        assert files and all(f.is_file() for f in files) and out / "classes.json" in files, fmt.name
        wrote.add(fmt.name)
    assert {"safetensors", "timm"} <= wrote  # what a timm run with a linear head can be held in
