"""Layer-group outputs: what a regularizer that compares feature maps reads, captured with forward hooks on each
group's output module (the last outermost module of the group, in the backbone's module order: a timm block, a
transformer layer, a stem's last norm), for the trained backbone and for a frozen copy of it at theta_0."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def output_module(backbone: Any, index: int) -> nn.Module:
    """The module whose output is group `index`'s output."""
    members = backbone.layer_groups()[index].members
    outer = {id(m) for n, m in members.items() if not any(n.startswith(o + ".") for o in members if o != n)}
    return [m for m in backbone.modules() if id(m) in outer][-1]


def first_tensor(output: Any) -> torch.Tensor:
    """A module's output as one tensor (a transformer layer returns a tuple whose first item is its states)."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


@contextlib.contextmanager
def captured(backbone: Any, groups: tuple[int, ...]) -> Iterator[dict[int, torch.Tensor]]:
    """Inside the block, every forward of `backbone` records the output of each of `groups`."""
    out: dict[int, torch.Tensor] = {}
    handles = [output_module(backbone, g).register_forward_hook(
        lambda _m, _i, o, g=g: out.__setitem__(g, first_tensor(o))) for g in groups]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def frozen_copy(backbone: Any) -> Any:
    """theta_0: a copy of `backbone` as it is now, in eval mode, that no optimizer or gradient touches."""
    source = copy.deepcopy(backbone).eval()
    for p in source.parameters():
        p.requires_grad_(False)
    return source


def channels(t: torch.Tensor) -> torch.Tensor:
    """A feature map as (batch, channels, positions): (B, C, H, W) convolution maps, (B, T, D) token states
    (channels = D), (B, D) vectors (one position)."""
    if t.dim() == 4:
        return t.flatten(2)
    if t.dim() == 3:
        return t.transpose(1, 2)
    return t.reshape(t.shape[0], -1, 1)
