"""The software a run or a finding ran on: installed versions of the libraries that matter, the lock the README's
commands install (`requirements.lock`, pip constraints), and how an installation differs from either. Imports
no framework: `tlr env` reads versions from package metadata."""

from __future__ import annotations

import functools
import re
from importlib import metadata
from pathlib import Path

# what a user pastes into a bug report (tlr env), and what run.json records
TRACKED_PACKAGES = ("torch", "torchvision", "lightning", "timm", "transformers", "tokenizers", "optuna", "wandb",
                    "torchmetrics", "peft", "datasets", "numpy", "scipy", "scikit-learn", "safetensors")
# the libraries whose version can move a finding's numbers (numerics, data order, sampling); W&B and the storage
# layers cannot
RESULT_SHAPING = ("torch", "torchvision", "lightning", "timm", "transformers", "tokenizers", "optuna",
                  "torchmetrics", "peft", "numpy", "scipy", "scikit-learn")
LOCK_NAME = "requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)  # installed versions do not change under a running process
def package_versions() -> dict[str, str | None]:
    """Installed version of each tracked package (None: not installed)."""
    return {name: installed(name) for name in TRACKED_PACKAGES}


def lock_path() -> Path | None:
    """The checkout's lock file (None for an installation from a wheel, which has no checkout)."""
    path = Path(__file__).resolve().parents[2] / LOCK_NAME
    return path if path.is_file() else None


def read_lock(path: Path) -> dict[str, str]:
    """`name==version` lines of a pip constraints file -> {canonical name: version}."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s;#]+)", line.strip())
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def differences(recorded: dict[str, str | None], names: tuple[str, ...] | None = None) -> dict[str, tuple]:
    """{package: (recorded, installed)} for each package of `recorded` (only `names`, when given) whose installed
    version is another."""
    by_name = {canonical(k): v for k, v in recorded.items()}
    out = {}
    for name in names or tuple(recorded):
        want = by_name.get(canonical(name))
        if want is not None and installed(name) != want:
            out[name] = (want, installed(name))
    return out


def describe(diffs: dict[str, tuple]) -> str:
    """`transformers 5.24.0 -> 5.25.0, torch 2.14.0 -> not installed`."""
    return ", ".join(f"{name} {want} -> {have or 'not installed'}" for name, (want, have) in diffs.items())
