"""Backbones: `timm/<name>` and `hf/<id or folder>` families with ordered layer groups.

The names below load on first use (PEP 562): `tlr backbones` lists the offline weights without importing torch or
timm, so it starts in well under a second.

May import: the base. Never data: both read inputs.py and assets.py.
"""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {"Backbone": "base", "BackboneSplit": "base", "LayerGroup": "base", "SplitUnsupported": "base",
         "check_groups": "base", "FAMILIES": "families", "build_backbone": "families",
         "inspect_backbone": "families", "list_backbones": "offline"}

__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    if name not in _FROM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
