"""What a run leaves and how it trains: the tested epoch (`trainer.restore_best`), per-class metrics and the
confusion matrix, gradient accumulation and clipping."""

import json

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from tests.conftest import tiny_experiment
from tl_research.config import load_experiment
from tl_research.lifecycle.inference import load_run
from tl_research.pipeline import build_backbone_from, build_module_from, run
from tl_research.run_folder import trim_checkpoints


def _predict(exp, ckpt, run_dir):
    module = build_module_from(exp, build_backbone_from(exp), 10)
    module.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    module.eval()
    from tl_research.data.datamodule import build_datamodule

    data = build_datamodule(exp.data, module.backbone.preprocessing, "image", exp.seed)
    with torch.no_grad():
        return np.concatenate([module(x).argmax(-1).numpy() for x, _ in data.test_dataloader()])


def test_last_epoch_or_best_epoch_is_tested(tmp_path):
    for restore, ckpt in ((False, "last.ckpt"), (True, "best.ckpt")):
        # a large constant lr: validation accuracy peaks before the last epoch, so best and last differ
        exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 5, "restore_best": restore},
                                                   optim={"lr": 0.3, "schedule": "constant"}))
        folder = tmp_path / str(restore)
        run(exp, folder)
        epochs = {name: torch.load(folder / "checkpoints" / name, weights_only=True)["epoch"]
                  for name in ("best.ckpt", "last.ckpt")}
        assert epochs["best.ckpt"] < epochs["last.ckpt"]  # else this test could not tell them apart
        with np.load(folder / "predictions.npz") as z:
            assert np.array_equal(z["pred"], _predict(exp, folder / "checkpoints" / ckpt, folder)), restore
        # readers load the checkpoint the metrics report, also once a study has trimmed the folder to it
        trim_checkpoints(folder, "best")
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [ckpt]
        assert load_run(folder).checkpoint.name == ckpt


def test_per_class_metrics_and_confusion_matrix(tmp_path):
    exp = load_experiment(data=tiny_experiment(tmp_path, data={"classes": ["1", "4", "7"]}))
    m = run(exp, tmp_path / "r").metrics
    with np.load(tmp_path / "r" / "predictions.npz") as z:
        label, pred = z["label"], z["pred"]
    rows = (tmp_path / "r" / "confusion.csv").read_text().splitlines()
    assert rows[0] == "true\\pred,1,4,7"
    confusion = np.array([[int(v) for v in r.split(",")[1:]] for r in rows[1:]])
    assert confusion.sum() == len(label) and np.trace(confusion) == int((label == pred).sum())
    per_class = {c: float(np.mean(pred[label == i] == i)) for i, c in enumerate(["1", "4", "7"])}
    assert m["test/acc_per_class"] == pytest.approx(per_class)
    assert m["test/balanced_acc"] == pytest.approx(np.mean(list(per_class.values())))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["test/acc_per_class"] == m["test/acc_per_class"]


class _Steps(L.Callback):
    """Counts optimizer steps; records the first step's gradient norm and how far it moved the weights."""

    def on_train_end(self, trainer, module):
        self.steps = trainer.global_step

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if not hasattr(self, "before"):
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            self.grad_norm = float(torch.nn.utils.get_total_norm(grads))
            self.before = [p.detach().clone() for p in module.parameters()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if hasattr(self, "before") and not hasattr(self, "moved"):
            self.moved = float(torch.stack([(p.detach() - b).norm() for p, b in
                                            zip(module.parameters(), self.before)]).norm())


def test_accumulation_and_clipping(tmp_path):
    counts = {}
    for accumulate in (1, 2):
        spy = _Steps()
        exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"accumulate_grad_batches": accumulate,
                                                                      "max_epochs": 1}))
        run(exp, tmp_path / f"a{accumulate}", callbacks=[spy])
        counts[accumulate] = spy.steps
    assert counts[1] == 4 and counts[2] == 2  # 64 training images in batches of 16
    # plain SGD at lr 1: the first step moves the weights by exactly the (clipped) gradient norm
    spy = _Steps()
    sgd = {"name": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"}
    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"gradient_clip_val": 1e-3, "max_epochs": 1},
                                               optim=sgd))
    run(exp, tmp_path / "clip", callbacks=[spy])
    assert spy.grad_norm > 1e-2 and spy.moved == pytest.approx(1e-3, rel=1e-3)


def test_monitor_val_loss_picks_the_lowest_loss_epoch(tmp_path):
    class Losses(L.Callback):
        def __init__(self):
            self.losses, self.accs = [], []

        def on_validation_epoch_end(self, trainer, module):
            if not trainer.sanity_checking:
                self.losses.append(float(trainer.callback_metrics["val/loss"]))
                self.accs.append(float(trainer.callback_metrics["val/acc"]))

    spy = Losses()
    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"max_epochs": 4, "monitor": "val/loss"},
                                               optim={"lr": 0.3, "schedule": "constant"}))
    m = run(exp, tmp_path / "r", callbacks=[spy]).metrics
    best = torch.load(tmp_path / "r" / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]
    assert best == int(np.argmin(spy.losses)) and m["val/loss"] == pytest.approx(min(spy.losses))
    assert m["val/acc"] == pytest.approx(spy.accs[best])  # the restored epoch's accuracy, not the last one's


def test_balanced_class_weights(tmp_path, capsys):
    import torch.nn.functional as F

    from tl_research.cli.main import main

    exp = load_experiment(data=tiny_experiment(tmp_path, optim={"class_weights": "balanced"}))
    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    module = build_module_from(exp, build_backbone_from(exp), 3, train_labels=labels)
    expected = torch.tensor([60 / (3 * 30), 60 / (3 * 10), 60 / (3 * 20)])
    assert torch.allclose(module.class_weights, expected)
    x, y = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 1, 2, 0])
    loss, logits, _ = module._loss((x, y))
    per = F.cross_entropy(logits, y, reduction="none")
    w = expected[y]
    assert loss.item() == pytest.approx(float((w * per).sum() / w.sum()), rel=1e-5)
    import yaml

    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, freeze={"strategy": "linear_probe", "probe": "lbfgs"},
                                                  optim={"class_weights": "balanced"})))
    assert main(["fit", str(cfg)]) == 2
    assert "unweighted logistic regression" in capsys.readouterr().err
