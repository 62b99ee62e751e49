"""bf16 autocast and channels-last: on the CPU here, and on CUDA where a GPU exists (skipped otherwise)."""

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from tests.conftest import tiny_experiment
from tl_research.config import load_experiment
from tl_research.pipeline import run


class Formats(L.Callback):
    """The dtype of the backbone's output and the memory format of its first conv, seen in the first step."""

    def __init__(self):
        self.seen = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.seen is None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=trainer.precision == "bf16-mixed"):
                out = module.backbone(batch[0])
            conv = next(m for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d))
            self.seen = (out.dtype, conv.weight.is_contiguous(memory_format=torch.channels_last))


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    """bf16-mixed runs the backbone in bfloat16 and channels_last lays its weights out NHWC; the fp32 default does
    neither, and both runs end with a finite loss."""
    runs = {}
    for name, trainer in (("bf16", {"precision": "bf16-mixed", "channels_last": True}), ("fp32", {})):
        spy = Formats()
        m = run(load_experiment(data=tiny_experiment(tmp_path, name=name, trainer=trainer)), callbacks=[spy]).metrics
        runs[name] = (spy.seen, m)
    assert runs["bf16"][0] == (torch.bfloat16, True) and runs["fp32"][0] == (torch.float32, False)
    for _, m in runs.values():
        assert np.isfinite(m["val/loss"]) and m["throughput/train_samples_per_sec"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_fit(tmp_path):
    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"accelerator": "gpu", "precision": "bf16-mixed",
                                                                   "channels_last": True}))
    m = run(exp).metrics
    cpu = run(load_experiment(data=tiny_experiment(tmp_path, name="cpu"))).metrics
    assert abs(m["test/acc"] - cpu["test/acc"]) <= 0.1  # the same seed and data on another device: close
    assert 0 < m["memory/peak_mb"] < torch.cuda.get_device_properties(0).total_memory / 2**20
