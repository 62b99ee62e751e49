"""The `hf/<model id or local folder>` family's registration: its builder's signature declares the family's
options. Reading a config checks them, so this module imports neither torch nor transformers; the model code
(hf.py) loads with the first hf backbone built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_research.backbones.families import register_family

if TYPE_CHECKING:
    from tl_research.backbones.hf import HFBackbone


@register_family("hf")
def build_hf(ident: str, weights: str, pooling: str = "mean", max_length: int = 128,
             layers: str = "last") -> HFBackbone:
    """A BERT-style encoder from a hub id or a local folder; weights none | hub | offline | a local folder | a run
    folder; `pooling` (mean, cls, pooler), the tokenizer's `max_length`, which `layers`' states are the features."""
    from tl_research.backbones import hf

    return hf.build(ident, weights, pooling, max_length, layers)
