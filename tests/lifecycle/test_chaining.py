"""Chained runs: `backbone.weights: <run folder>` starts from the backbone a previous run trained."""

import json
import shutil

import pytest
import torch
import yaml

from tests.conftest import tiny_experiment
from tl_research.backbones import build_backbone
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.pipeline import run


def _trained(folder):
    state = torch.load(folder / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    return {k.removeprefix("backbone.model."): v for k, v in state.items() if k.startswith("backbone.model.")}


def test_timm_run_continues_from_a_class_half(tmp_path):
    """Train from scratch on classes 0-4 (half A), then transfer that backbone to classes 5-9 (half B)."""
    a = run(load_experiment(data=tiny_experiment(tmp_path, data={"classes": list("01234")})), tmp_path / "A")
    trained = _trained(a.run_dir)
    bb = build_backbone("timm/test_efficientnet", str(a.run_dir))
    for key, value in bb.model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    fresh = build_backbone("timm/test_efficientnet", "none")
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.model.state_dict().items())
    b = run(load_experiment(data=tiny_experiment(tmp_path, backbone={"weights": str(a.run_dir)},
                                                 freeze={"strategy": "linear_probe"},
                                                 data={"classes": list("56789")})), tmp_path / "B")
    record = json.loads((b.run_dir / "run.json").read_text())
    assert record["weights_source"] == f"run:{a.run_dir.resolve()}" and b.metrics["data/num_classes"] == 5


def test_head_from_run_keeps_the_trained_classifier(tmp_path, capsys):
    """head.from_run: the next run's head starts as the previous run's head (same classes); a head that does not
    fit, or no run folder, is a one-line error."""
    from tl_research.backbones.from_run import load_run_head
    from tl_research.training.heads import build_head

    a = run(load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 1})), tmp_path / "A")
    state = torch.load(a.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    head = build_head(int(state["head.1.weight"].shape[1]), 10)
    load_run_head(head, str(a.run_dir))
    assert torch.equal(head[1].weight, state["head.1.weight"]) and torch.equal(head[1].bias, state["head.1.bias"])
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, head={"from_run": True})))
    for sets, message in ((["data.classes=[0,1,2]", f"backbone.weights={a.run_dir}"], "does not fit this run's head"),
                          (["backbone.weights=none"], "backbone.weights must be a run folder")):
        assert main(["fit", str(cfg), *[f"--set={x}" for x in sets]]) == 2
        err = capsys.readouterr().err
        assert "head.from_run: " in err and message in err and err.count("\n") == 1, err
    b = run(load_experiment(data=tiny_experiment(tmp_path, head={"from_run": True}, trainer={"max_epochs": 1},
                                                 backbone={"weights": str(a.run_dir)},
                                                 freeze={"strategy": "surgical", "group": 0},
                                                 optim={"lr": 1e-9})), tmp_path / "B")
    after = torch.load(b.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert torch.allclose(after["head.1.weight"], state["head.1.weight"], atol=1e-6)  # started from A's head


def test_hf_run_continues_from_a_run(tmp_path, tiny_bert):
    sections = {"backbone": {"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24},
                "data": {"name": "rotten-tomatoes", "image_size": None, "train_limit": 32, "eval_limit": 16},
                "trainer": {"max_epochs": 1}}
    a = run(load_experiment(data=tiny_experiment(tmp_path, **sections)), tmp_path / "A")
    trained = _trained(a.run_dir)
    bb = build_backbone(f"hf/{tiny_bert}", str(a.run_dir))
    original = build_backbone(f"hf/{tiny_bert}", "offline")
    changed = 0
    for key, value in bb.model.state_dict().items():
        assert torch.equal(value, trained[key]), key
        changed += not torch.equal(value, original.model.state_dict()[key])
    assert changed > 0 and bb.weights_source.startswith("run:")


def test_bad_run_folders_are_one_line_errors(tmp_path, tiny_bert, capsys):
    a = run(load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 1})), tmp_path / "A")
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_experiment(tmp_path, backbone={"name": "timm/test_resnet"})))
    half = tmp_path / "half"
    (half / "checkpoints").mkdir(parents=True)
    (half / "config.yaml").write_text((a.run_dir / "config.yaml").read_text())

    def refused(config, weights, message):
        assert main(["fit", str(config), "--set", f"backbone.weights={weights}"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err

    refused(cfg, tmp_path / "nosuch", "backbone.weights: ")
    refused(other, a.run_dir, "trained timm/test_efficientnet, not timm/test_resnet")
    refused(cfg, half, "has not finished (no metrics.json)")
    (half / "metrics.json").write_text((a.run_dir / "metrics.json").read_text())
    refused(cfg, half, "has no checkpoints/best.ckpt, the model its metrics report")
    (half / "checkpoints" / "best.ckpt").write_bytes(b"not a checkpoint")
    refused(cfg, half, "cannot read")
    # another attempt's checkpoint in the place of the one the metrics report: refused, never loaded silently
    b = run(load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 1})), tmp_path / "B")
    shutil.copy(b.run_dir / "checkpoints" / "best.ckpt", half / "checkpoints" / "best.ckpt")
    refused(cfg, half, "is not the model")
    from tl_research.lifecycle.inference import load_run

    with pytest.raises(UserError, match="is not the model"):
        load_run(half)


@pytest.mark.slow
def test_offline_mobilenet_run_chains(tmp_path):
    """Real path: a fine-tuned MobileNetV2 run is the starting point of the next run, tensor for tensor."""
    exp = load_experiment("experiments/mobilenetv2_animal_full.yaml", [
        "data.train_limit=60", "data.eval_limit=40", "data.image_size=64", "trainer.max_epochs=1",
        "tracking.mode=disabled", "trainer.progress_bar=false"])
    a = run(exp, tmp_path / "A")
    bb = build_backbone("timm/mobilenetv2_100", str(a.run_dir))
    trained = _trained(a.run_dir)
    assert all(torch.equal(v, trained[k]) for k, v in bb.model.state_dict().items())


def test_keep_groups_keeps_the_first_groups_and_reinitialises_the_rest(tmp_path, capsys):
    """Yosinski's AnB: the first n groups come from the run trained on A, the others (parameters and BatchNorm
    statistics) are what a from-scratch backbone starts with, drawn from the run's seed."""
    import lightning.pytorch as L

    from tl_research.pipeline import build_backbone_from

    a = run(load_experiment(data=tiny_experiment(tmp_path, data={"classes": list("01234")})), tmp_path / "A")
    trained = _trained(a.run_dir)
    exp = load_experiment(data=tiny_experiment(tmp_path, seed=3, backbone={"weights": str(a.run_dir),
                                                                            "keep_groups": 2}))
    L.seed_everything(3, verbose=False)
    bb = build_backbone_from(exp)
    L.seed_everything(3, verbose=False)
    build_backbone("timm/test_efficientnet", "none")  # the draw build_backbone_from made first (the weights)
    scratch = build_backbone("timm/test_efficientnet", "none").model.state_dict()
    groups = bb.layer_groups()
    kept = {f"{m}.{k}" for g in groups[:2] for m, mod in g.modules.items() for k in mod.state_dict()}
    new = {f"{m}.{k}" for g in groups[2:] for m, mod in g.modules.items() for k in mod.state_dict()}
    state = bb.model.state_dict()
    assert kept and new and any(k.endswith("running_mean") for k in new)
    assert all(torch.equal(state[k], trained[k]) for k in kept)
    assert all(torch.equal(state[k], scratch[k]) for k in new)
    assert any(not torch.equal(trained[k], scratch[k]) for k in new if trained[k].is_floating_point())
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, backbone={"weights": str(a.run_dir),
                                                                      "keep_groups": 99})))
    assert main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "backbone.keep_groups: 99 is more than the backbone's" in err and err.count("\n") == 1
