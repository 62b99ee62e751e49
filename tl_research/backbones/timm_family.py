"""The `timm/<name>` family's registration: its builder's signature declares the family's options. Reading a
config checks them, so this module imports neither torch nor timm; the model code (timm.py) loads with the first
timm backbone built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_research.backbones.families import register_family

if TYPE_CHECKING:
    from tl_research.backbones.timm import TimmBackbone


@register_family("timm")
def build_timm(ident: str, weights: str, coarse: bool = False, layers: str = "last") -> TimmBackbone:
    """Any timm architecture `ident` as a feature extractor; weights none | hub | offline | a local file | a run
    folder; `coarse`: one layer group per stage (`layers` is hf's option, taken only to refuse it with a reason)."""
    from tl_research.backbones import timm

    return timm.build(ident, weights, coarse, layers)
