"""`trainer.restore_best`: the test sees the best validation epoch (default) or the last epoch's weights."""

import numpy as np
import torch

from tl_research.config import load_experiment
from tl_research.run import build_backbone_from, build_module_from, run

from .conftest import tiny_experiment


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
