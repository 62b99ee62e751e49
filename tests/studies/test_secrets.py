"""No secret on disk: a study on a live PostgreSQL storage whose URL carries a password, run as a user runs it
(`tlr study --workers 2`, `tlr worker`, `tlr report`, W&B offline files on), leaves the password in no file under
its runs, its study-summary and report folders — nor when the password comes from the environment."""

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import yaml

from tests.conftest import tiny_experiment
from tl_research.studies.storage import open_storage

TLR = [sys.executable, "-m", "tl_research.cli"]


def _study(tmp_path: Path, name: str) -> Path:
    exp = tiny_experiment(tmp_path, tracking={"mode": "offline"})
    study = {"name": name, "kind": "grid", "grid": {"freeze.strategy": ["linear_probe", "full"]}, "seeds": 1}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"experiment": exp, "study": study}))
    return path


def _tlr(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(TLR + args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "offline", **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _holding(root: Path, secret: str) -> list[str]:
    """Every file under `root` whose bytes contain `secret` (W&B's binary run files included)."""
    needle = secret.encode()
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _written(tmp_path: Path) -> list[Path]:
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)  # the W&B offline files were written, so they were searched
    assert any(p.name == "run.json" for p in files) and any(p.name == "results.md" for p in files)
    return files


def test_password_in_the_storage_url_reaches_no_file(tmp_path, postgres_url):
    password = urlsplit(postgres_url).password
    assert password and len(password) >= 8  # .ci/postgres.sh's password occurs nowhere else
    name = f"secret-{uuid.uuid4().hex[:8]}"
    out = _tlr(["study", str(_study(tmp_path, name)), "--storage", postgres_url, "--workers", "2"], tmp_path)
    _tlr(["worker", "--study", name, "--storage", postgres_url], tmp_path)  # joins a finished study: nothing left
    report = _tlr(["report", name, "--storage", postgres_url, "--out", str(tmp_path / "report")], tmp_path)
    _written(tmp_path)
    assert _holding(tmp_path, password) == []
    assert password not in out.stdout + out.stderr + report.stdout + report.stderr


def test_password_from_the_environment_reaches_no_file(tmp_path, postgres_url):
    parts = urlsplit(postgres_url)
    password = parts.password
    without = parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}").geturl()
    name = f"secret-env-{uuid.uuid4().hex[:8]}"
    # libpq reads PGPASSWORD; TLR_STORAGE stands in for --storage (so no URL is in any command line at all)
    _tlr(["study", str(_study(tmp_path, name)), "--workers", "2"], tmp_path, PGPASSWORD=password,
         TLR_STORAGE=without)
    _tlr(["report", name, "--out", str(tmp_path / "report")], tmp_path, PGPASSWORD=password, TLR_STORAGE=without)
    # the study really is in the PostgreSQL storage (not a default SQLite file beside the runs)
    study = optuna.load_study(study_name=name, storage=open_storage(postgres_url))
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    _written(tmp_path)
    assert _holding(tmp_path, password) == []
