"""Shared fixtures: tiny random-weight twins (a timm test model, a 2-layer BERT) and tiny experiments."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")  # tracking tests turn it back on explicitly
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: each (and the tlr processes its tests start) computes on one thread,
    # instead of every worker fighting over every core
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the feature cache of this test session (subprocesses inherit it); never the user's own cache
if "TLR_CACHE_DIR" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="tlr-test-cache-")
    os.environ["TLR_CACHE_DIR"] = _SESSION_CACHE
    # and the Arrow files `datasets` writes when it loads parquet / csv files (data.name hf)
    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(_SESSION_CACHE, "hf-datasets"))
else:
    _SESSION_CACHE = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this session's feature cache (hundreds of MB): repeated suites must not fill the disk."""
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def postgres_url() -> str:
    """The live PostgreSQL storage `.ci/postgres.sh` starts (CI sets TLR_TEST_POSTGRES_URL: fail without it)."""
    url = os.environ.get("TLR_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI starts PostgreSQL and sets TLR_TEST_POSTGRES_URL; it is missing")
        pytest.skip("set TLR_TEST_POSTGRES_URL (bash .ci/postgres.sh prints one) to run this test")
    return url


@pytest.fixture
def slurm_cluster() -> None:
    """The one-node Slurm `.ci/slurm.sh` starts (CI runs it: fail without it; elsewhere skip, saying how)."""
    import subprocess

    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        state = ""
    if not any(s in state for s in ("idle", "mixed", "allocated")):
        if os.environ.get("CI"):
            pytest.fail(f"CI starts Slurm (.ci/slurm.sh); sinfo shows no usable node ({state.strip() or 'no sinfo'})")
        pytest.skip("no Slurm node here: bash .ci/slurm.sh (as root) starts a one-node Slurm")


@pytest.fixture
def fashion_mnist_folder() -> Path:
    """Where Debian's dataset-fashion-mnist put its IDX files (CI installs the package: fail without it there)."""
    from tl_research.data.datasets import FASHION_DEBIAN, _debian_folder
    from tl_research.data.registry import DATASETS

    if not DATASETS.get("fashion-mnist", "data.name").available():
        if os.environ.get("CI"):
            pytest.fail("CI installs the Debian package dataset-fashion-mnist; it is missing")
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    return _debian_folder("dataset-fashion-mnist", FASHION_DEBIAN)


# a small WordPiece vocabulary: special tokens, characters, their continuations and common words, so any English
# text tokenises (mostly into characters) without any installed model
_WORDS = ("the a an and or but not no is was are be it this that of to in on for with as by at from film movie "
          "story good bad great best worst love fun funny dull boring long short plot acting actor director "
          "script scene one two first its his her they there than more most very too so just even only")


def _vocab() -> list[str]:
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'\"-:;()")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *_WORDS.split()]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) with a small WordPiece tokenizer, saved as a local HF folder (defined here:
    no installed model needed)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = _vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder


def tiny_experiment(tmp_path: Path, **sections: dict) -> dict:
    """An experiment mapping for a seconds-long CPU run on a tiny timm twin; `sections` update it."""
    data = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "backbone": {"name": "timm/test_efficientnet", "weights": "none"},
        "freeze": {"strategy": "full"},
        "data": {"name": "animal-mnist", "train_limit": 64, "eval_limit": 40, "image_size": 32, "batch_size": 16},
        "optim": {"lr": 0.01},
        "trainer": {"max_epochs": 2, "patience": None, "progress_bar": False, "accelerator": "cpu"},
        "tracking": {"mode": "disabled"},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data


def grid_study(tmp_path: Path, name: str, strategies: list, shots: list, seeds: list,
               accs: dict[tuple, float]) -> str:
    """A strategy x shots grid study in a real SQLite storage whose trials carry known metrics: `accs` maps
    (strategy, shots, seed) to test/acc (missing keys: missing cells); returns the storage URL."""
    import optuna
    import yaml
    from optuna.distributions import CategoricalDistribution

    from tl_research.studies.storage import open_storage
    from tl_research.studies.study import create_or_load
    from tl_research.studies.studyspec import load_study

    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "experiment": {"name": name, "output_dir": str(tmp_path / "runs"), "tracking": {"mode": "disabled"},
                       "freeze": {"depth": 12}},
        "study": {"name": name, "kind": "grid", "seeds": seeds,
                  "grid": {"freeze.strategy": strategies, "data.shots": shots}}}))
    url = f"sqlite:///{tmp_path / 'st.db'}"
    study = create_or_load(load_study(cfg), open_storage(url))
    dists = {"freeze.strategy": CategoricalDistribution(strategies), "data.shots": CategoricalDistribution(shots),
             "seed": CategoricalDistribution(seeds)}
    for (strategy, shot, seed), acc in accs.items():
        i = strategies.index(strategy)
        study.add_trial(optuna.trial.create_trial(
            params={"freeze.strategy": strategy, "data.shots": shot, "seed": seed}, distributions=dists,
            values=[acc], user_attrs={"test/acc": acc, "val/acc": acc,
                                      "throughput/train_samples_per_sec": 100.0 * (i + 1),
                                      "params/trainable": 1000 * (i + 1)}))
    return url


def predictions_study(tmp_path: Path, seeds: int, effect: float = 0.10, size: int = 200, shifts: int = 0) -> str:
    """A strategy grid study (linear_probe 0.70, full 0.70 + effect, depth 0.70) in a real SQLite storage whose
    trials left real per-example predictions (predictions.npz in their run folders) on one shared test set, and
    with `shifts`, on that many shifted copies of it (predictions_shifted.npz, test_shifted/acc at 0.1 below);
    returns the storage URL (study `n<seeds>`)."""
    import numpy as np
    import optuna
    import yaml
    from optuna.distributions import CategoricalDistribution

    from tl_research.studies.storage import open_storage
    from tl_research.studies.study import create_or_load
    from tl_research.studies.studyspec import load_study

    cfg = tmp_path / f"s{seeds}.yaml"
    rows = ["linear_probe", "full", "depth"]
    cfg.write_text(yaml.safe_dump({
        "experiment": {"name": "n", "output_dir": str(tmp_path / "runs"), "tracking": {"mode": "disabled"},
                       "freeze": {"depth": 3}},
        "study": {"name": f"n{seeds}", "kind": "grid", "seeds": seeds, "grid": {"freeze.strategy": rows}}}))
    url = f"sqlite:///{tmp_path / f'n{seeds}.db'}"
    study = create_or_load(load_study(cfg), open_storage(url))
    rng = np.random.default_rng(seeds)
    labels = rng.integers(0, 10, size)
    dists = {"freeze.strategy": CategoricalDistribution(rows), "seed": CategoricalDistribution(list(range(seeds)))}
    for seed in range(seeds):
        for strategy, p_right in (("linear_probe", 0.70), ("full", 0.70 + effect), ("depth", 0.70)):
            right = rng.random(size) < p_right + rng.normal(0, 0.01)
            pred = np.where(right, labels, (labels + 1) % 10)
            run_dir = tmp_path / "runs" / f"{strategy}-{seed}-{seeds}"
            run_dir.mkdir(parents=True)
            np.savez(run_dir / "predictions.npz", index=np.arange(size), label=labels, pred=pred)
            acc = float(right.mean())
            attrs = {"test/acc": acc, "data/test_size": size, "run_dir": str(run_dir)}
            if shifts:
                shifted = rng.random(size * shifts) < p_right - 0.1
                np.savez(run_dir / "predictions_shifted.npz", index=np.tile(np.arange(size), shifts),
                         label=np.tile(labels, shifts),
                         pred=np.where(shifted, np.tile(labels, shifts), (np.tile(labels, shifts) + 1) % 10))
                attrs["test_shifted/acc"] = float(shifted.mean())
            study.add_trial(optuna.trial.create_trial(
                params={"freeze.strategy": strategy, "seed": seed}, distributions=dists, values=[acc],
                user_attrs=attrs))
    return url
