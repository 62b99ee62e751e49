"""The backbone section's options (`backbone:` of an experiment): which model and weights, and the options of the
families (each family takes its own: its builder's keyword arguments; set for another family, they are refused)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tl_research.backbones.families import family_options, option_names
from tl_research.schema import bounds, keyed, unkeyed

LayerChoice = Literal["last", "second_to_last", "sum_last_four", "concat_last_four", "embeddings", "weighted"]


@dataclass
class BackboneConfig:
    # timm/<any timm model> or hf/<model id or local folder> (tlr backbones lists the offline ones)
    name: str = field(default="timm/mobilenetv2_100", metadata=keyed())
    # offline (installed weight package) | hub | none (random init) | a local weight file or folder | a run folder
    weights: str = field(default="offline", metadata=unkeyed())
    # timm: coarse groups (one per stage) instead of one per block
    coarse: bool = field(default=False, metadata=keyed())
    # keep only the first n layer groups of the loaded weights and re-initialise the rest at random, as from
    # scratch (Yosinski et al. 2014's AnB: the first n layers of a network trained on A, the rest new); None: all
    keep_groups: int | None = field(default=None, metadata=keyed(bounds(ge=0)))
    # hf encoders: how token states become one vector
    pooling: Literal["mean", "cls", "pooler"] = field(default="mean", metadata=keyed())
    # hf encoders: tokenizer truncation length
    max_length: int = field(default=128, metadata=keyed(bounds(ge=8, le=4096)))
    # hf encoders: which layers' states are the features (BERT's Table 7): last, second_to_last, sum_last_four,
    # concat_last_four, embeddings, or weighted (a learned softmax-weighted sum of all layers, trained with the head)
    layers: LayerChoice = field(default="last", metadata=keyed())

    def __post_init__(self) -> None:
        # an option of another family, set, would be ignored: refused when the experiment is read (fit, config,
        # every study cell), not when the model is built
        family_options(self.name, {k: getattr(self, k) for k in option_names()})
