"""bf16 autocast and channels-last: on the CPU here, and on CUDA where a GPU exists (skipped otherwise)."""

import pytest
import torch

from tests.conftest import tiny_experiment
from tl_research.config import load_experiment
from tl_research.run import run


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"precision": "bf16-mixed", "channels_last": True}))
    m = run(exp).metrics
    assert 0.0 <= m["test/acc"] <= 1.0 and m["throughput/train_samples_per_sec"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_fit(tmp_path):
    exp = load_experiment(data=tiny_experiment(tmp_path, trainer={"accelerator": "gpu", "precision": "bf16-mixed",
                                                                   "channels_last": True}))
    m = run(exp).metrics
    assert 0.0 <= m["test/acc"] <= 1.0
    assert 0 < m["memory/peak_mb"] < torch.cuda.get_device_properties(0).total_memory / 2**20
