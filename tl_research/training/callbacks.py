"""Callbacks: training/inference throughput and peak memory.

Lightning's ThroughputMonitor reports rolling per-step rates through the logger; what tables need is one number
per run: samples/s over the training batches after a warm-up (validation excluded) and over the whole test set,
with device synchronisation around the timed region. That is these few lines.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _batch_size(batch: Any) -> int:
    return len(batch[1])


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's counters, or on Linux the process' peak RSS (writing 5 to clear_refs resets
    VmHWM), so that later runs in one process (a study worker) do not inherit earlier runs' peaks."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the figure is then the process peak


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on GPU; on CPU the peak RSS since `reset_peak_memory` (Linux), else the process peak."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
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
        reset_peak_memory(module.device)

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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill or a full disk mid-write leaves the previous
    checkpoint intact, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
