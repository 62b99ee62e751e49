"""The backbone section's options (`backbone:` of an experiment): which model and weights, and the options of the
families (each family takes its own: its builder's keyword arguments; set for another family, they are refused)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from tl_research.backbones.families import family_options, option_names, parse_options
from tl_research.schema import bounds, keyed, parse_fields, unkeyed

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
    # a plugin family's own options (its builder's other keyword arguments), written as backbone.<option>
    options: dict[str, Any] = field(default_factory=dict, metadata=keyed({"flat": True}))

    def __post_init__(self) -> None:
        # an option of another family, set, would be ignored: refused when the experiment is read (fit, config,
        # every study cell), not when the model is built
        family_options(self.name, self.family_kwargs())

    def family_kwargs(self) -> dict[str, Any]:
        """The family options as the builder takes them: the built-in families' fields and a plugin family's own."""
        return {**{k: getattr(self, k) for k in option_names() if k in _FIXED}, **self.options}

    @classmethod
    def from_mapping(cls, data: Any, prefix: str = "backbone.") -> BackboneConfig:
        own = {k: v for k, v in data.items() if k not in _FIXED} if isinstance(data, dict) else {}
        fixed = parse_fields(cls, {k: v for k, v in data.items() if k in _FIXED} if isinstance(data, dict) else data,
                             prefix, skip=("options",))
        return cls(**fixed, options=parse_options(fixed.get("name", cls.name), own, list(_FIXED)))

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in _FIXED}, **self.options}


_FIXED = tuple(f.name for f in dataclasses.fields(BackboneConfig) if f.name != "options")
