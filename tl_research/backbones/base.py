"""The Backbone protocol and its ordered layer groups.

A backbone maps a batch to one feature vector per example and exposes `layer_groups()`: an ordered list from
input to output. Freeze depth k freezes groups [0, k), whatever the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class ImageSpec:
    """How images must look for this backbone (from its pretrained config)."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class TextSpec:
    """How text is tokenised for this backbone."""

    tokenizer: Any
    max_length: int


@dataclass
class LayerGroup:
    """One freezable unit: its parameters and the modules that own them."""

    index: int
    name: str
    params: dict[str, nn.Parameter]
    modules: dict[str, nn.Module]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params.values())


@runtime_checkable
class Backbone(Protocol):
    name: str
    modality: Literal["image", "text"]
    num_features: int
    weights_source: str
    preprocessing: ImageSpec | TextSpec

    def layer_groups(self) -> list[LayerGroup]: ...

    def __call__(self, inputs: Any) -> torch.Tensor: ...

    def parameters(self) -> Any: ...


def short_name(param_names: list[str]) -> str:
    """A readable group name: each parameter's path up to its last numeric part, in order, joined by '+'.

    `blocks.3.1.conv_pw.weight` -> `blocks.3.1`, `encoder.layer.2.attention...` -> `encoder.layer.2`,
    `conv_stem.weight` -> `conv_stem`.
    """
    seen: dict[str, None] = {}
    for name in param_names:
        parts = name.split(".")[:-1] or name.split(".")
        last_num = max((i for i, p in enumerate(parts) if p.isdigit()), default=-1)
        seen[".".join(parts[: last_num + 1]) if last_num >= 0 else parts[0]] = None
    # `layer2.0.downsample.0` is inside `layer2.0`: keep only outermost prefixes
    return "+".join(p for p in seen if not any(p.startswith(q + ".") for q in seen))


def build_groups(model: nn.Module, param_groups: list[list[str]], names: list[str] | None = None) -> list[LayerGroup]:
    """LayerGroups from ordered lists of parameter names; a module joins the group that holds its own params."""
    params = dict(model.named_parameters())
    owner = {pname: i for i, group in enumerate(param_groups) for pname in group}
    groups = [
        LayerGroup(i, names[i] if names else short_name(g), {p: params[p] for p in g}, {})
        for i, g in enumerate(param_groups)
    ]
    for mname, module in model.named_modules():
        own = [f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)]
        if own and own[0] in owner:
            groups[owner[own[0]]].modules[mname] = module
    return groups


def check_groups(model: nn.Module, groups: list[LayerGroup]) -> None:
    """Raise if groups are empty, overlap, or miss a parameter of `model` (the protocol's invariants)."""
    seen: set[str] = set()
    for g in groups:
        if not g.params:
            raise ValueError(f"layer group {g.index} ({g.name}) is empty")
        overlap = seen & g.params.keys()
        if overlap:
            raise ValueError(f"parameters in two layer groups: {sorted(overlap)[:3]}")
        seen |= g.params.keys()
    missing = {n for n, _ in model.named_parameters()} - seen
    if missing:
        raise ValueError(f"parameters in no layer group: {sorted(missing)[:3]}")
