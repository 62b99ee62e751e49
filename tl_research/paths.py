"""Where a command writes: an output folder or file named by the user is checked before anything runs, so a path
under a file, a folder given for a file (or the reverse) or a read-only place is one line naming the option."""

from __future__ import annotations

import os
from pathlib import Path

from tl_research.errors import UserError


def writable_folder(path: str | Path, option: str) -> Path:
    """`path` as a folder that exists or can be created and written (`option` names it in the error)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{option}: {path} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{option}: {path} lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option}: {existing} is not writable")
    return path


def writable_file(path: str | Path, option: str) -> Path:
    """`path` as a file that can be written (it may exist: it is replaced)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option}: {path} is a folder; name a file")
    writable_folder(path.parent, option)
    return path


def default_cache_dir() -> Path:
    """Where the feature cache lives unless `cache.dir` says otherwise."""
    return Path(os.environ.get("TLR_CACHE_DIR") or Path.home() / ".cache" / "tl_research" / "features")
