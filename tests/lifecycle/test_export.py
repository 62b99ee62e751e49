"""`tlr export`: every format loads back in the tool it is for, with the same logits (1e-5)."""

import json

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import tiny_experiment
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.data.registry import load_dataset
from tl_research.lifecycle.inference import load_run
from tl_research.pipeline import run


def _images(loaded, n=6):
    from tl_research.data.datamodule import input_collates

    collate, _ = input_collates(loaded.model.backbone.preprocessing, loaded.experiment.data)
    raw = load_dataset("animal-mnist")
    return collate([(raw.inputs[i], 0) for i in range(n)])[0]


def _texts(loaded):
    tok = loaded.model.backbone.preprocessing.tokenizer
    return dict(tok(["a good film", "dull and long", "the plot"], padding=True, return_tensors="pt"))


def _bert_run(tmp_path, tiny_bert, out="r", **sections):
    """One epoch of the tiny BERT on a few Rotten Tomatoes reviews; returns the run folder."""
    base = {"backbone": {"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24},
            "data": {"name": "rotten-tomatoes", "image_size": None, "train_limit": 32, "eval_limit": 16},
            "trainer": {"max_epochs": 1}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return run(load_experiment(data=tiny_experiment(tmp_path, **base)), tmp_path / out).run_dir


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


def _write_images(folder, sizes):
    """Animal-MNIST silhouettes saved as grey PNGs, each at every size in `sizes` (pixels repeated)."""
    from PIL import Image

    folder.mkdir()
    raw = load_dataset("animal-mnist")
    for i in range(8):
        for size in sizes:
            Image.fromarray(raw.inputs[i]).resize((size, size), Image.NEAREST).save(folder / f"{i}-{size}.png")
    return folder


def _tlr_probabilities(capsys, run_dir, inputs, tmp_path):
    """`tlr predict`'s CSV as {input id: probabilities in class order}."""
    import csv

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run_dir), str(inputs), "--out", str(out)]) == 0
    capsys.readouterr()
    with out.open() as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c.startswith("p_")]
    return {r["input"]: np.array([float(r[c]) for c in columns]) for r in rows}


def _check_timm_export(run_dir, tmp_path, capsys, size):
    """timm's own loading (local-dir), data config and default eval transform on PIL images give `tlr predict`'s
    probabilities to 1e-4: for images at the trained size and for images timm must resize (smaller and larger)."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    out = tmp_path / "timm"
    assert main(["export", str(run_dir), "--format", "timm", "--out", str(out)]) == 0
    images = _write_images(tmp_path / "images", (size, 28, 50))
    expected = _tlr_probabilities(capsys, run_dir, images, tmp_path)
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    config = resolve_data_config(model=model)
    assert config["input_size"] == (3, size, size) and config["interpolation"] == "bilinear"
    transform = create_transform(**config)
    with torch.no_grad():
        got = {name: model(transform(Image.open(images / name).convert("RGB"))[None]).softmax(-1)[0].numpy()
               for name in expected}
    assert len(expected) == 24
    assert max(np.abs(got[n] - expected[n]).max() for n in expected) < 1e-4
    loaded = load_run(run_dir)
    assert model.pretrained_cfg["label_names"] == loaded.classes
    meta = safe_open(str(out / "model.safetensors"), "pt").metadata()
    assert json.loads(meta["classes"]) == loaded.classes and meta["backbone"] == loaded.experiment.backbone.name
    assert json.loads(meta["preprocessing"])["input_size"] == [3, size, size]
    assert meta["run"] == str(loaded.checkpoint.resolve())


def test_timm_export_is_a_timm_model_with_the_runs_preprocessing(tmp_path, timm_run, capsys):
    _check_timm_export(timm_run, tmp_path, capsys, 32)


@pytest.mark.slow
def test_real_mobilenet_export_predicts_in_timm_as_in_tlr(tmp_path, capsys):
    """Real path: the offline ImageNet MobileNetV2, linear-probed at 64 px, exported and run by timm's defaults."""
    data = tiny_experiment(tmp_path, backbone={"name": "timm/mobilenetv2_100", "weights": "offline"},
                           freeze={"strategy": "linear_probe"}, data={"image_size": 64, "train_limit": 200},
                           trainer={"max_epochs": 2})
    result = run(load_experiment(data=data), tmp_path / "r")
    assert result.metrics["test/acc"] > 0.5  # the pretrained features transfer: the export holds a real model
    _check_timm_export(result.run_dir, tmp_path, capsys, 64)


def _check_hf_export(run_dir, tmp_path, capsys, max_length):
    """AutoModelForSequenceClassification (remote code shipped in the export) + AutoTokenizer, and a
    text-classification pipeline, give `tlr predict`'s probabilities (1e-4) — a text longer than the run's
    max_length included, so the tokenizer must cut where the run cut."""
    import csv

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out)]) == 0
    texts = ["a good film", "dull and long " * 20, "the plot"]
    inputs = tmp_path / "texts.csv"
    with inputs.open("w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], *([str(i), t] for i, t in enumerate(texts))])
    expected = _tlr_probabilities(capsys, run_dir, inputs, tmp_path)
    expected = np.stack([expected[str(i)] for i in range(len(texts))])
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.model_max_length == max_length
    batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        assert np.abs(model(**batch).logits.softmax(-1).numpy() - expected).max() < 1e-4
    classes = load_run(run_dir).classes
    assert [model.config.id2label[i] for i in range(len(classes))] == classes
    scores = pipeline("text-classification", model=str(out), trust_remote_code=True)(texts, truncation=True,
                                                                                     top_k=None)
    got = np.array([[{d["label"]: d["score"] for d in row}[c] for c in classes] for row in scores])
    assert np.abs(got - expected).max() < 1e-4


def test_hf_export_loads_as_a_transformers_classifier(tmp_path, tiny_bert, capsys):
    _check_hf_export(_bert_run(tmp_path, tiny_bert, head={"type": "mlp", "hidden": 8}), tmp_path, capsys, 24)


@pytest.mark.slow
def test_real_minilm_export_predicts_in_transformers_as_in_tlr(tmp_path, capsys):
    """Real path: the offline MiniLM with CLS pooling, its last two layers fine-tuned, as a transformers
    classifier."""
    data = tiny_experiment(tmp_path, backbone={"name": "hf/all-MiniLM-L6-v2", "weights": "offline", "max_length": 32,
                                               "pooling": "cls"},
                           freeze={"strategy": "depth", "depth": 5},
                           data={"name": "rotten-tomatoes", "image_size": None, "train_limit": 64, "eval_limit": 32},
                           trainer={"max_epochs": 1})
    _check_hf_export(run(load_experiment(data=data), tmp_path / "r").run_dir, tmp_path, capsys, 32)


def test_hf_export_refuses_a_weighted_layer_mix(tmp_path, tiny_bert, capsys):
    run_dir = _bert_run(tmp_path, tiny_bert, backbone={"layers": "weighted"})
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    assert "backbone.layers=weighted mixes layers in the head" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _base(loaded):
    """The backbone a LoRA run started from: its offline weights loaded afresh, or (random weights, drawn once) the
    run's own backbone with every adapter taken out unmerged (LoRA never trains the base)."""
    import copy

    from peft.tuners.lora import LoraLayer

    from tl_research.backbones import build_backbone

    b = loaded.experiment.backbone
    if b.weights == "offline":
        return build_backbone(b.name, "offline", **b.family_kwargs())
    base = copy.deepcopy(loaded.model.backbone)
    for name, module in list(base.model.named_modules()):
        if isinstance(module, LoraLayer):
            parent, _, child = name.rpartition(".")
            setattr(base.model.get_submodule(parent), child, module.get_base_layer())
    return base


def _peft_back(out, loaded):
    """The peft export on the run's base (peft's own injection), with its head: a function of a batch."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    fresh = _base(loaded)
    inject_adapter_in_model(LoraConfig.from_pretrained(str(out)), fresh.model)
    set_peft_model_state_dict(fresh.model, load_file(str(out / "adapter_model.safetensors")))
    head = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(fresh.num_features, len(loaded.classes)))
    head.load_state_dict(load_file(str(out / "head.safetensors")))
    fresh.eval()
    return lambda batch: head(fresh(batch))


def _hf_back(out, loaded):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    return lambda batch: model(**batch).logits


# each format read back by the tool it is for, as a function of the run's own model inputs; a new format must say
# here how it loads back (the contract test fails otherwise)
LOAD_BACK = {
    "safetensors": lambda out, loaded: load_run(out).model,
    "timm": lambda out, loaded: timm.create_model(f"local-dir:{out}", pretrained=True).eval(),
    "hf": _hf_back,
    "peft": _peft_back,
}


def test_peft_round_trip(tmp_path, tiny_bert):
    from peft import LoraConfig

    run_dir = _bert_run(tmp_path, tiny_bert, freeze={"strategy": "lora", "lora": {"rank": 4}}, optim={"lr": 0.05})
    out = tmp_path / "peft"
    assert main(["export", str(run_dir), "--format", "peft", "--out", str(out)]) == 0
    loaded = load_run(run_dir)
    assert LoraConfig.from_pretrained(str(out)).r == 4
    batch = _texts(loaded)
    with torch.no_grad():
        assert torch.allclose(_peft_back(out, loaded)(batch), loaded.model(batch), atol=1e-5)
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


def test_every_registered_format_writes_whole_and_loads_back_or_refuses_before_writing(tmp_path, tiny_bert):
    """The contract of the format registry, on LoRA runs of a timm model and of an HF encoder: a format either
    writes every file it names (with the class names), which its tool loads back with the run's logits (1e-5: a
    tool without peft gets the adapters merged in), or refuses with one line before the folder exists; every format
    writes for one of the two."""
    from tl_research.errors import UserError
    from tl_research.lifecycle.export import export, formats

    lora = {"freeze": {"strategy": "lora", "lora": {"rank": 4}}, "optim": {"lr": 0.05}}
    timm_lora = run(load_experiment(data=tiny_experiment(tmp_path, **lora)), tmp_path / "timm-lora").run_dir
    assert {f.name for f in formats()} <= set(LOAD_BACK)
    wrote = set()
    for run_dir, inputs in ((timm_lora, _images), (_bert_run(tmp_path, tiny_bert, "hf-lora", **lora), _texts)):
        loaded = load_run(run_dir)
        x = inputs(loaded)
        for fmt in formats():
            out = tmp_path / "all" / run_dir.name / fmt.name
            try:
                files = export(loaded, fmt.name, out)
            except UserError as exc:
                assert str(exc).startswith("--format: ") and not out.exists(), fmt.name
                continue
            assert files and all(f.is_file() for f in files) and out / "classes.json" in files, fmt.name
            for f in files:  # every tensor file says what it holds and where it came from
                if f.suffix == ".safetensors":
                    meta = safe_open(str(f), "pt").metadata()
                    assert json.loads(meta["classes"]) == loaded.classes, f
                    assert meta["run"] == str(loaded.checkpoint.resolve()), f
            with torch.no_grad():
                assert torch.allclose(LOAD_BACK[fmt.name](out, loaded)(x), loaded.model(x), atol=1e-5), fmt.name
            wrote.add(fmt.name)
    assert wrote == {f.name for f in formats()}
