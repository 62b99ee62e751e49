"""timm (bounded <2): the one step of a VisionTransformer's forward that is no public submodule."""

from __future__ import annotations

import torch
from torch import nn


def vit_tokens(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class/register tokens + position embedding (`VisionTransformer._pos_embed`, timm 1.0):
    `forward_features` runs it inline and `forward_intermediates` returns block outputs without the prefix
    tokens' order guaranteed, so a split after the embedding has no public entry point."""
    return model._pos_embed(model.patch_embed(images))
