"""`tlr env`: what a user runs, to paste into a bug report — library versions against the lock, the offline asset
packages, the devices and the feature cache folder (as `python -m torch.utils.collect_env` and `transformers env`
do for theirs)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

from tl_research.backbones.offline import OFFLINE
from tl_research.cli.console import print_table
from tl_research.data import DATASETS
from tl_research.paths import default_cache_dir
from tl_research.runtime import environment


def _devices() -> dict[str, Any]:
    import torch  # deferred: the rest of the report must not wait for torch when it is broken

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    return {"cuda_build": torch.version.cuda, "cuda_available": cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "mps_available": bool(mps and mps.is_available()), "cpu_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}


def _assets() -> list[dict[str, Any]]:
    """Each offline asset package a backbone or dataset names: the version it asks for and the one installed."""
    wanted = {e.requirement for e in OFFLINE.values()} | {d.requirement for _, d in DATASETS.items() if d.requirement}
    out = []
    for req in sorted(wanted):
        name, _, version = req.partition("==")
        out.append({"package": name, "wanted": version or None, "installed": environment.installed(name)})
    return out


def collect() -> dict[str, Any]:
    lock = environment.lock_path()
    pins = environment.read_lock(lock) if lock else {}
    packages = {name: {"installed": version, "lock": pins.get(environment.canonical(name))}
                for name, version in environment.package_versions().items()}
    off_lock = environment.differences(pins) if lock else {}
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "lock": {"path": str(lock) if lock else None, "pinned": len(pins),
                     "differences": {k: {"lock": w, "installed": h} for k, (w, h) in off_lock.items()}},
            "devices": _devices(), "assets": _assets(),
            "cache_dir": str(default_cache_dir()), "cache_dir_from": "TLR_CACHE_DIR"
            if os.environ.get("TLR_CACHE_DIR") else "default"}


def cmd_env(args: argparse.Namespace) -> None:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"python {info['python']} on {info['platform']}\n")
    print_table([[name, p["installed"] or "not installed", p["lock"] or "-",
                  "" if p["lock"] is None or p["lock"] == p["installed"] else "differs"]
                 for name, p in info["packages"].items()], ["package", "installed", "lock", ""])
    lock = info["lock"]
    if lock["path"] is None:
        print("\nlock: none here (an installation without a checkout; the checkout's requirements.lock pins them)")
    elif lock["differences"]:
        shown = environment.describe({k: (d["lock"], d["installed"]) for k, d in lock["differences"].items()})
        print(f"\nlock: {len(lock['differences'])} of {lock['pinned']} pinned packages differ from {lock['path']}: "
              f"{shown}\n      `make install` installs the lock")
    else:
        print(f"\nlock: all {lock['pinned']} pinned packages match {lock['path']}")
    d = info["devices"]
    gpus = ", ".join(d["gpus"]) or "none"
    print(f"devices: torch CUDA build {d['cuda_build'] or 'none'}, CUDA available: {d['cuda_available']} "
          f"(GPUs: {gpus}), MPS: {d['mps_available']}, CPU {d['processor']} with {d['cpu_threads']} threads")
    assets = ", ".join(f"{a['package']} {a['installed'] or 'missing'}"
                       + (f" (wants {a['wanted']})" if a["installed"] and a["wanted"] not in (None, a["installed"])
                          else "") for a in info["assets"])
    print(f"offline assets: {assets}")
    print(f"feature cache: {info['cache_dir']} ({info['cache_dir_from']})")
