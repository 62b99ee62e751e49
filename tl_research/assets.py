"""Files shipped inside installed registry packages (weights, datasets), located without importing the package:
some print or pull heavy modules on import (see ASSETS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(module: str) -> Path | None:
    """The folder of installed package `module`, or None when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])
