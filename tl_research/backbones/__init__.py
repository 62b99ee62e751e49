"""Backbone families behind one registry: `timm/<name>` and `hf/<id or folder>`; each family takes its own options."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

from tl_research.backbones.base import (
    Backbone,
    BackboneSplit,
    LayerGroup,
    SplitUnsupported,
    check_groups,
)
from tl_research.errors import UserError
from tl_research.registry import Registry

FAMILIES: Registry[Callable[..., Backbone]] = Registry("backbone family")


@FAMILIES.register("timm")
def _timm(ident: str, weights: str, coarse: bool = False) -> Backbone:
    from tl_research.backbones.timm import build_timm

    return build_timm(ident, weights, coarse)


@FAMILIES.register("hf")
def _hf(ident: str, weights: str, pooling: str = "mean", max_length: int = 128) -> Backbone:
    from tl_research.backbones.hf import build_hf

    return build_hf(ident, weights, pooling, max_length)


def build_backbone(name: str, weights: str = "offline", **options: Any) -> Backbone:
    """Backbone `family/ident` with the requested weights; `options` the family takes (timm: coarse; hf: pooling,
    max_length), others ignored. Errors are UserErrors naming the config key."""
    family, sep, ident = name.partition("/")
    if not sep or not ident:
        raise UserError(f"backbone.name: {name!r} must look like timm/<model> or hf/<model id or folder>")
    builder = FAMILIES.get(family, "backbone.name")
    accepted = inspect.signature(builder).parameters
    return builder(ident, weights, **{k: v for k, v in options.items() if k in accepted})


def inspect_backbone(name: str, coarse: bool = False) -> dict[str, Any]:
    """Layer groups of `name` in freeze order: structure only (built on the meta device: no weights, no memory)."""
    import torch

    with torch.device("meta"):
        backbone = build_backbone(name, "none", coarse=coarse)
    groups = backbone.layer_groups()
    return {"backbone": name, "num_params": sum(p.numel() for p in backbone.parameters()),
            "groups": [{"index": g.index, "name": g.name, "num_params": g.num_params} for g in groups]}


def list_backbones(pattern: str | None = None) -> list[dict[str, Any]]:
    """Backbones with offline weights, plus timm models matching `pattern` (hub or local weights)."""
    import timm

    from tl_research.backbones.offline import OFFLINE, offline_path

    rows: dict[str, dict[str, Any]] = {}
    for name, entry in OFFLINE.items():
        ok = offline_path(entry) is not None
        rows[name] = {"name": name, "available": ok, "weights": "offline", **({} if ok else {"install": entry.install})}
    if pattern:
        timm_pattern = pattern[5:] if pattern.startswith("timm/") else pattern
        for arch in timm.list_models(timm_pattern):
            rows.setdefault(f"timm/{arch}", {"name": f"timm/{arch}", "available": False, "weights": "hub",
                                             "install": "no offline weights: weights: hub (network) or a local file"})
        rows = {k: v for k, v in rows.items() if fnmatch.fnmatch(k, pattern) or fnmatch.fnmatch(k, f"timm/{pattern}")}
    return sorted(rows.values(), key=lambda r: (not r["available"], r["name"]))


__all__ = ["Backbone", "BackboneSplit", "LayerGroup", "SplitUnsupported", "build_backbone", "check_groups",
           "inspect_backbone", "list_backbones", "FAMILIES"]
