"""Backbone families behind one registry: `timm/<name>` and `hf/<id or folder>`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tl_research.backbones.base import Backbone, ImageSpec, LayerGroup, TextSpec, check_groups
from tl_research.errors import UserError
from tl_research.registry import Registry

FAMILIES: Registry[Callable[..., Backbone]] = Registry("backbone family")


@FAMILIES.register("timm")
def _timm(ident: str, weights: str, coarse: bool, pooling: str, max_length: int) -> Backbone:
    from tl_research.backbones.timm import build_timm

    return build_timm(ident, weights, coarse)


@FAMILIES.register("hf")
def _hf(ident: str, weights: str, coarse: bool, pooling: str, max_length: int) -> Backbone:
    from tl_research.backbones.hf import build_hf

    return build_hf(ident, weights, pooling, max_length)


def build_backbone(name: str, weights: str = "offline", coarse: bool = False, pooling: str = "mean",
                   max_length: int = 128) -> Backbone:
    """Backbone `family/ident` with the requested weights; errors are UserErrors naming the config key."""
    family, sep, ident = name.partition("/")
    if not sep or not ident:
        raise UserError(f"backbone.name: {name!r} must look like timm/<model> or hf/<model id or folder>")
    return FAMILIES.get(family, "backbone.name")(ident, weights, coarse, pooling, max_length)


def inspect_backbone(name: str, coarse: bool = False) -> dict[str, Any]:
    """Layer groups of `name` in freeze order (structure only: random init, nothing downloaded)."""
    backbone = build_backbone(name, "none", coarse=coarse)
    groups = backbone.layer_groups()
    return {"backbone": name, "num_params": sum(p.numel() for p in backbone.parameters()),
            "groups": [{"index": g.index, "name": g.name, "num_params": g.num_params} for g in groups]}


__all__ = ["Backbone", "ImageSpec", "LayerGroup", "TextSpec", "build_backbone", "check_groups", "inspect_backbone",
           "FAMILIES"]
