"""Callbacks: training/inference throughput and peak memory.

Lightning's ThroughputMonitor reports rolling per-step rates through the logger; what tables need is one number
per run: samples/s over the training batches after a warm-up (validation excluded) and over the whole test set,
with device synchronisation around the timed region. That is these few lines.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning.pytorch as L
import torch


def _batch_size(batch: Any) -> int:
    return len(batch[1])


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on GPU; the process' peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class Throughput(L.Callback):
    """Times training batches (after `warmup_batches`) and test batches; results in `self.metrics`."""

    def __init__(self, warmup_batches: int = 3) -> None:
        self.warmup_batches = warmup_batches
        self.metrics: dict[str, float] = {}
        self._batches: list[tuple[int, float]] = []  # (samples, seconds) of every training batch
        self._test = [0, 0.0]
        self._t0 = 0.0
        self._fit_t0 = 0.0

    @staticmethod
    def _sync(module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._fit_t0 = time.perf_counter()
        if module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, idx: int) -> None:
        self._sync(module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, out: Any, batch: Any,
                           idx: int) -> None:
        self._sync(module)
        self._batches.append((_batch_size(batch), time.perf_counter() - self._t0))

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.metrics["time/fit_seconds"] = time.perf_counter() - self._fit_t0
        # skip the warm-up batches; a very short run keeps at least its last batch
        timed = self._batches[min(self.warmup_batches, max(0, len(self._batches) - 1)):]
        seconds = sum(t for _, t in timed)
        if seconds > 0:
            self.metrics["throughput/train_samples_per_sec"] = sum(n for n, _ in timed) / seconds
        self.metrics["memory/peak_mb"] = peak_memory_mb(module.device)

    def on_test_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, idx: int,
                            dataloader_idx: int = 0) -> None:
        self._sync(module)
        self._t0 = time.perf_counter()

    def on_test_batch_end(self, trainer: L.Trainer, module: L.LightningModule, out: Any, batch: Any, idx: int,
                          dataloader_idx: int = 0) -> None:
        self._sync(module)
        self._test[0] += _batch_size(batch)
        self._test[1] += time.perf_counter() - self._t0

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._test[1] > 0:
            self.metrics["throughput/infer_samples_per_sec"] = self._test[0] / self._test[1]
        self.metrics["memory/peak_mb"] = max(self.metrics.get("memory/peak_mb", 0.0), peak_memory_mb(module.device))
