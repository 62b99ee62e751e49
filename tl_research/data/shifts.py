"""Shifted test sets: corruptions of the test images at a severity 1-5, in the spirit of ImageNet-C / CIFAR-10-C
(Hendrycks & Dietterich 2019). Each applies to a float (3, H, W) image in [0, 1] after resizing, before
normalisation; random corruptions draw from a generator seeded by the image's own bytes, so every run (and every
batch size) sees the same shifted test set.

Severity parameters follow CIFAR-10-C's where it has the corruption (noise sigma, contrast factor, brightness
shift); blur's sigma is CIFAR-10-C's at 32 px scaled to the image size.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms.v2.functional import gaussian_blur, rotate

from tl_research.errors import UserError

Shift = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def _noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def _blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1] * x.shape[-1] / 32
    size = 2 * int(3 * sigma + 0.5) + 1
    return gaussian_blur(x, [size, size], [sigma, sigma])


def _contrast(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def _brightness(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    return (x + (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]).clamp(0, 1)


def _rotation(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    degrees = (10.0, 20.0, 30.0, 45.0, 60.0)[severity - 1]
    sign = 1.0 if torch.rand((), generator=gen) < 0.5 else -1.0
    return rotate(x, sign * degrees)


SHIFTS: dict[str, Shift] = {"gaussian_noise": _noise, "blur": _blur, "contrast": _contrast,
                            "brightness": _brightness, "rotation": _rotation}


@dataclass(frozen=True)
class ShiftSpec:
    name: str
    severity: int

    @property
    def metric(self) -> str:
        return f"test_{self.name}_{self.severity}/acc"

    def __call__(self, x: torch.Tensor, raw_bytes: bytes) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(raw_bytes) * 7 + self.severity)
        return SHIFTS[self.name](x, self.severity, gen)


# the mean accuracy over the shifted test sets, when there are two or more (Kumar et al.'s "average OOD accuracy")
MEAN_METRIC = "test_shifted/acc"


def parse_shift(text: str, key: str) -> ShiftSpec:
    """One shift, "name" or "name:severity" (severity 1-5, default 3); `key` names the option in errors."""
    m = re.fullmatch(r"\s*(\w+)\s*(?::\s*(\d+))?\s*", str(text))
    name, severity = (m.group(1), int(m.group(2) or 3)) if m else (text, 0)
    if name not in SHIFTS:
        raise UserError(f"{key}: unknown shift {text!r} (allowed: {', '.join(SHIFTS)}, optionally :severity 1-5)")
    if not 1 <= severity <= 5:
        raise UserError(f"{key}: severity {severity} is out of range (allowed: 1-5)")
    return ShiftSpec(name, severity)


def parse_shifts(values: list[str] | None) -> list[ShiftSpec]:
    """`data.eval_shifts` entries as specs."""
    out = [parse_shift(text, f"data.eval_shifts[{i}]") for i, text in enumerate(values or [])]
    if len({s.metric for s in out}) != len(out):
        raise UserError("data.eval_shifts: a shift is listed twice")
    return out


def evaluate_shifts(model: torch.nn.Module, shifts: list[ShiftSpec], raw: object, indices: object,
                    collate_for: Callable[[ShiftSpec], Callable], prefix: torch.nn.Module | None = None,
                    batch_size: int = 256) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Accuracy of `model` (already holding its tested weights) on each shifted copy of the pool examples
    `indices`, and its predictions there (metric -> predicted labels, in `indices` order); `prefix` maps images
    to what the model takes when it trains on cached prefix outputs."""
    device = next(model.parameters()).device
    model.eval()
    out, preds = {}, {}
    with torch.no_grad():
        for spec in shifts:
            collate, pred, labels = collate_for(spec), [], []
            for start in range(0, len(indices), batch_size):
                items = [(raw.inputs[int(j)], int(raw.labels[int(j)])) for j in indices[start:start + batch_size]]
                x, y = collate(items)
                x = x.to(device)
                logits = model(prefix(x) if prefix is not None else x)
                pred.append(logits.argmax(-1).cpu())
                labels.append(y)
            preds[spec.metric] = torch.cat(pred) if pred else torch.zeros(0, dtype=torch.long)
            right = int((preds[spec.metric] == torch.cat(labels)).sum()) if labels else 0
            out[spec.metric] = right / max(1, len(indices))
    if len(shifts) > 1:
        out[MEAN_METRIC] = sum(out.values()) / len(shifts)
    return out, preds
