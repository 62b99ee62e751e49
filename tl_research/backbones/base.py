"""The Backbone protocol, its ordered layer groups, and its split into a runnable prefix and suffix.

A backbone maps a batch to one feature vector per example and exposes `layer_groups()`: an ordered list from
input to output. Freeze depth k freezes groups [0, k), whatever the architecture. `split(k)` cuts the forward at
the boundary before group k: `suffix(prefix(x)) == backbone(x)`, so the frozen prefix can be computed once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from tl_research.errors import UserError
from tl_research.inputs import ImageSpec, TextSpec


@dataclass
class LayerGroup:
    """One freezable unit: its parameters, the modules that own them, and every module wholly inside it."""

    index: int
    name: str
    params: dict[str, nn.Parameter]
    modules: dict[str, nn.Module]  # modules owning (directly) a parameter of this group
    # modules whose parameters all lie in this group, and parameter-less modules below one of them (dropout,
    # stochastic depth): what runs in eval mode while the group is frozen
    members: dict[str, nn.Module]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params.values())


def reinit_groups(backbone: Any, fresh: Any, keep: int) -> None:
    """Give `backbone`'s groups from index `keep` up the parameters and buffers (BatchNorm statistics) of the same
    groups of `fresh`, an identically built backbone at its initial weights."""
    groups, new = backbone.layer_groups(), fresh.layer_groups()
    if keep > len(groups):
        raise UserError(f"backbone.keep_groups: {keep} is more than the backbone's {len(groups)} layer groups "
                        f"(allowed: 0..{len(groups)}; see tlr inspect)")
    for mine, theirs in zip(groups[keep:], new[keep:]):
        for name, module in mine.modules.items():
            module.load_state_dict(theirs.modules[name].state_dict())


# what flows between prefix and suffix: the raw input (k = 0), per-example tensors (feature maps), token states with
# their attention mask (ragged: one row per real token), or final pooled vectors (the suffix is the identity)
Intermediate = Literal["input", "tensor", "tokens", "pooled"]


class SplitUnsupported(Exception):
    """This backbone cannot be cut at that group boundary (the message says why); nothing is approximated."""


@dataclass
class BackboneSplit:
    """`suffix(prefix(x)) == backbone(x)`; both share the backbone's own modules (no copies)."""

    k: int
    prefix: nn.Module
    suffix: nn.Module
    kind: Intermediate


@runtime_checkable
class Backbone(Protocol):
    name: str
    modality: Literal["image", "text"]
    num_features: int
    weights_source: str
    preprocessing: ImageSpec | TextSpec
    model: nn.Module  # the wrapped library model (timm / transformers); strategies such as LoRA change it in place

    def layer_groups(self) -> list[LayerGroup]: ...

    def split(self, k: int) -> BackboneSplit:
        """Prefix = groups [0, k) and everything before them, suffix = the rest with pooling; raises
        SplitUnsupported where the architecture has no such cut."""
        ...

    def __call__(self, inputs: Any) -> torch.Tensor: ...

    def parameters(self) -> Any: ...

    def named_parameters(self) -> Any: ...


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


def _members(model: nn.Module, owner: dict[str, int]) -> dict[str, int]:
    """Module name -> group for every module whose parameters all lie in one group; a parameter-less module
    belongs to the group of its nearest ancestor that has one."""
    found: dict[str, int] = {}
    for mname, module in model.named_modules():
        where = {owner.get(f"{mname}.{p}" if mname else p) for p, _ in module.named_parameters()}
        if len(where) == 1 and None not in where:
            found[mname] = where.pop()
        elif not where and mname:
            parent = mname.rpartition(".")[0]
            while parent and parent not in found:
                parent = parent.rpartition(".")[0]
            if parent in found:
                found[mname] = found[parent]
    return found


def build_groups(model: nn.Module, param_groups: list[list[str]], names: list[str] | None = None) -> list[LayerGroup]:
    """LayerGroups from ordered lists of parameter names; a module joins the group that holds its own params."""
    params = dict(model.named_parameters())
    owner = {pname: i for i, group in enumerate(param_groups) for pname in group}
    groups = [
        LayerGroup(i, names[i] if names else short_name(g), {p: params[p] for p in g}, {}, {})
        for i, g in enumerate(param_groups)
    ]
    modules = dict(model.named_modules())
    for mname, module in modules.items():
        own = [f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)]
        if own and own[0] in owner:
            groups[owner[own[0]]].modules[mname] = module
    for mname, index in _members(model, owner).items():
        groups[index].members[mname] = modules[mname]
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


# ---------------------------------------------------------------- splitting a chain of steps

@dataclass(frozen=True)
class Step:
    """One stage of a backbone's forward, in order: the parameter names (prefixes) it uses and the call."""

    params: tuple[str, ...]
    call: Callable[[Any], Any]


class Chain(nn.Module):
    """Steps run in order. Holds no modules of its own: the steps' modules stay registered in the backbone."""

    def __init__(self, steps: Sequence[Step]) -> None:
        super().__init__()
        self._steps = list(steps)

    def forward(self, x: Any) -> Any:
        for step in self._steps:
            x = step.call(x)
        return x


def as_module(fn: Callable[[Any], Any]) -> Chain:
    """A function as a module (it holds no parameters: the backbone's own modules do the work)."""
    return Chain([Step((), fn)])


def step_groups(steps: Sequence[Step], groups: list[LayerGroup]) -> list[set[int]]:
    """The groups whose parameters each step uses; a parameter-less step joins the previous step's group."""
    owner = {pname: g.index for g in groups for pname in g.params}
    found: list[set[int]] = []
    for step in steps:
        hit = {i for pname, i in owner.items()
               if any(pname == p or pname.startswith(f"{p}.") for p in step.params)}
        found.append(hit or ({max(found[-1])} if found else {0}))
    return found


def cut(steps: Sequence[Step], groups: list[LayerGroup], k: int) -> int:
    """Index of the first step of group >= k (steps before it form the prefix), or SplitUnsupported."""
    n = len(groups)
    if not 0 <= k <= n:
        raise SplitUnsupported(f"k = {k} is outside 0..{n}")
    if k == n:
        return len(steps)
    where = step_groups(steps, groups)
    for i, g in enumerate(where):
        if max(g) >= k:
            if min(g) < k:
                raise SplitUnsupported(f"group {k} shares a stage of the forward with an earlier group")
            if any(min(h) < k for h in where[i:]):
                raise SplitUnsupported(f"a stage after group {k} uses parameters of an earlier group")
            return i
    raise SplitUnsupported(f"no stage of the forward uses group {k}")


def weights_digest(module: Any) -> str:
    """A digest of every tensor of `module` (names, shapes, values): the weights actually loaded."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        if tensor.numel():
            h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
