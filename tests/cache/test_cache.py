"""Runnable splits, the feature cache (keys, recovery, concurrency) and cached == uncached runs."""

import json
import multiprocessing
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import tiny_experiment
from tl_research.backbones import build_backbone
from tl_research.backbones.hf import layer_mask
from tl_research.cache.store import FeatureStore
from tl_research.config import load_experiment
from tl_research.pipeline import run

TIMM = ["resnet18", "mobilenetv2_100", "tf_efficientnet_lite0", "convnext_atto", "vit_tiny_patch16_224",
        "test_efficientnet", "test_resnet", "test_convnext", "test_vit"]


def _assert_split_equivalence(backbone, inputs):
    backbone.eval()
    with torch.no_grad():
        ref = backbone(inputs)
        n = len(backbone.layer_groups())
        for k in range(n + 1):
            split = backbone.split(k)
            assert torch.allclose(split.suffix(split.prefix(inputs)), ref, atol=1e-5), k
        assert backbone.split(n).kind == "pooled" and backbone.split(0).kind == "input"
        assert {backbone.split(k).kind for k in range(1, n)} <= {"tensor", "tokens"}


@pytest.mark.parametrize("arch", TIMM)
def test_timm_prefix_then_suffix_equals_forward(arch):
    torch.manual_seed(0)
    size = 224 if "vit_tiny" in arch else 64 if "test_vit" not in arch else 160
    backbone = build_backbone(f"timm/{arch}", "none")
    _assert_split_equivalence(backbone, torch.randn(2, 3, size, size))


# the attention implementations a CPU runs (flash attention needs CUDA); the layers take a different mask form in
# each (eager: additive float, sdpa: boolean), so the split must build the one the loaded model uses
ATTENTION = ["eager", "sdpa"]


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bert_prefix_then_suffix_equals_forward(tiny_bert, pooling, attention):
    backbone = build_backbone(f"hf/{tiny_bert}", "offline", pooling=pooling)
    backbone.model.set_attn_implementation(attention)
    tok = backbone.preprocessing.tokenizer
    batch = dict(tok(["a good film", "the worst plot of the year by far", "fun"], padding=True, return_tensors="pt"))
    _assert_split_equivalence(backbone, batch)
    states = backbone.split(2).prefix(batch)
    assert set(states) == {"hidden_states", "attention_mask"}  # the mask travels with the hidden states


def test_offline_weights_split_equivalence():
    _assert_split_equivalence(build_backbone("timm/mobilenetv2_100", "offline"), torch.randn(2, 3, 64, 64))
    minilm = build_backbone("hf/all-MiniLM-L6-v2", "offline")
    batch = dict(minilm.preprocessing.tokenizer(["a moving, funny film", "dull"], padding=True, return_tensors="pt"))
    for attention in ATTENTION:
        minilm.model.set_attn_implementation(attention)
        _assert_split_equivalence(minilm, batch)
        # the switch took: the layers get the mask form of that implementation (padding makes one necessary)
        hidden = minilm.model.embeddings(input_ids=batch["input_ids"])
        mask = layer_mask(minilm.model, hidden, batch["attention_mask"])
        assert mask.dtype == (torch.bool if attention == "sdpa" else hidden.dtype), attention


def test_unsplittable_backbone_says_so_and_run_goes_on_uncached(tmp_path):
    from tl_research.backbones.base import SplitUnsupported

    backbone = build_backbone("timm/test_byobnet", "none")
    with pytest.raises(SplitUnsupported, match="no known block-by-block forward"):
        backbone.split(1)
    exp = load_experiment(data=tiny_experiment(tmp_path, backbone={"name": "timm/test_byobnet"},
                                               freeze={"strategy": "depth", "depth": 1}))
    m = run(exp).metrics
    assert m["cache/used"] is False and "cannot be split" in m["cache/reason"]
    off = run(load_experiment(data=tiny_experiment(tmp_path, name="off", backbone={"name": "timm/test_byobnet"},
                                                   freeze={"strategy": "depth", "depth": 1},
                                                   cache={"mode": "off"}))).metrics
    assert m["test/acc"] == off["test/acc"] and m["val/loss"] == pytest.approx(off["val/loss"], rel=1e-6)


# ------------------------------------------------------------------ the store

def _rows(idx):
    return np.stack([np.full(3, float(i), np.float32) for i in idx]), None


def test_store_computes_only_missing_rows_and_recovers_from_corruption(tmp_path):
    store = FeatureStore(tmp_path, {"k": 1})
    rows, computed = store.ensure(np.array([3, 1, 2]), _rows)
    assert computed == 3 and rows[2].tolist() == [2.0, 2.0, 2.0]
    rows, computed = store.ensure(np.array([1, 2, 5]), _rows)
    assert computed == 1 and len(rows) == 4 and rows[5][0] == 5.0
    # truncate one chunk's data file: detected by size, removed, its rows computed again
    chunk = sorted(store.folder.glob("chunk-*"))[0]
    data = chunk / "data.npy"
    data.write_bytes(data.read_bytes()[:-4])
    rows, computed = FeatureStore(tmp_path, {"k": 1}).ensure(np.array([1, 2, 3, 5]), _rows)
    assert computed in (1, 3) and [rows[i][0] for i in (1, 2, 3, 5)] == [1.0, 2.0, 3.0, 5.0]
    # same size, flipped bytes: caught by the checksum (a new process has not verified this chunk yet)
    import tl_research.cache.store as store_module

    chunk = sorted(store.folder.glob("chunk-*"))[-1]
    raw = bytearray((chunk / "data.npy").read_bytes())
    raw[-1] ^= 0xFF
    (chunk / "data.npy").write_bytes(bytes(raw))
    store_module._VERIFIED.clear()
    rows, computed = FeatureStore(tmp_path, {"k": 1}).ensure(np.array([1, 2, 3, 5]), _rows)
    assert computed >= 1 and [rows[i][0] for i in (1, 2, 3, 5)] == [1.0, 2.0, 3.0, 5.0]


def test_ragged_rows_round_trip(tmp_path):
    def tokens(idx):
        lengths = [int(i) + 1 for i in idx]
        return (np.concatenate([np.full((n, 2), float(i), np.float32) for i, n in zip(idx, lengths)]),
                np.concatenate([[0], np.cumsum(lengths)]))

    rows, _ = FeatureStore(tmp_path, {"t": 1}).ensure(np.array([0, 4, 2]), tokens)
    assert rows[4].shape == (5, 2) and rows[2].shape == (3, 2) and rows[0][0, 0] == 0.0


def _slow_compute(args):
    root, log = args
    store = FeatureStore(root, {"shared": True})

    def compute(idx):
        with open(log, "a") as f:
            f.write(f"{len(idx)}\n")
        time.sleep(1.0)
        return _rows(idx)

    rows, computed = store.ensure(np.arange(10), compute)
    return computed, rows[7][0]


def test_two_processes_compute_one_key_once(tmp_path):
    log = tmp_path / "computed.log"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_slow_compute, [(str(tmp_path / "cache"), str(log))] * 2)
    assert sorted(r[0] for r in results) == [0, 10]  # one process computed every row, the other none
    assert log.read_text().split() == ["10"] and all(r[1] == 7.0 for r in results)


def test_unwritable_cache_dir_is_one_line_exit_2(tmp_path, capsys):
    import yaml

    from tl_research.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, freeze={"strategy": "depth", "depth": 2},
                                                  cache={"dir": str(blocker / "cache")})))
    assert main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cache.dir: cannot write the feature cache" in err[0]


# ------------------------------------------------------------------ keys and runs

def _fit(tmp_path, name, **sections):
    return run(load_experiment(data=tiny_experiment(tmp_path, name=name, **sections)))


def test_cache_hits_and_misses_on_each_key_part(tmp_path, tiny_bert):
    depth = {"freeze": {"strategy": "depth", "depth": 2}}
    first = _fit(tmp_path, "a", **depth).metrics
    assert first["cache/used"] is True and first["cache/rows_computed"] == 64 + 40 + 40
    same = _fit(tmp_path, "b", **depth, optim={"lr": 0.003}, head={"dropout": 0.1}).metrics  # lr, head: same rows
    assert same["cache/key"] == first["cache/key"] and same["cache/rows_computed"] == 0
    more = _fit(tmp_path, "c", **depth, data={"train_limit": 80}).metrics  # other rows of the same pool
    assert more["cache/key"] == first["cache/key"] and more["cache/rows_computed"] == 16
    for change in ({"freeze": {"strategy": "depth", "depth": 3}},  # k
                   {**depth, "data": {"image_size": 40}},  # preprocessing
                   {**depth, "data": {"name": "digits"}},  # dataset identity
                   {**depth, "cache": {"dtype": "float16"}},  # storage
                   {**depth, "backbone": {"name": "timm/test_resnet", "weights": "none"}}):  # backbone
        m = _fit(tmp_path, "d", **change).metrics
        assert m["cache/key"] != first["cache/key"] and m["cache/rows_computed"] > 0, change
    # other weights: with weights=none the seed draws another random init, a miss (the key holds a digest of the
    # weights loaded)
    m = _fit(tmp_path, "e", **depth, seed=1).metrics
    assert m["cache/key"] != first["cache/key"] and m["cache/rows_computed"] == 144
    # text: the tokenizer's max_length is part of the key
    text = {"backbone": {"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 16},
            "data": {"name": "rotten-tomatoes", "image_size": None}, "freeze": {"strategy": "depth", "depth": 1}}
    a = _fit(tmp_path, "t", **text).metrics
    b = _fit(tmp_path, "t", **{**text, "backbone": {**text["backbone"], "max_length": 24}}).metrics
    assert a["cache/used"] and a["cache/key"] != b["cache/key"]
    refresh = _fit(tmp_path, "r", **depth, cache={"mode": "refresh"}).metrics
    assert refresh["cache/key"] == first["cache/key"] and refresh["cache/rows_computed"] == 144


def test_auto_says_why_it_does_not_cache(tmp_path):
    m = _fit(tmp_path, "aug", freeze={"strategy": "depth", "depth": 2}, data={"augment": {"hflip": True}}).metrics
    assert m["cache/used"] is False and "augmentation" in m["cache/reason"]
    m = _fit(tmp_path, "bn", freeze={"strategy": "depth", "depth": 2, "bn": "train"}).metrics
    assert m["cache/used"] is False and "BatchNorm" in m["cache/reason"]
    m = _fit(tmp_path, "full", freeze={"strategy": "full"}).metrics
    assert m["cache/used"] is False and "no layer group stays frozen" in m["cache/reason"]
    m = _fit(tmp_path, "off", freeze={"strategy": "depth", "depth": 2}, cache={"mode": "off"}).metrics
    assert m["cache/used"] is False and m["cache/reason"] == "cache.mode=off"


@pytest.mark.parametrize("family", ["cnn", "bert"])
def test_cached_and_uncached_runs_agree(tmp_path, tiny_bert, family):
    """Same seed, same split, same batches: the cached run trains the same suffix on the same numbers.

    Tolerance: 1e-4 on metrics; the prefix runs in batches of another size when cached, and CPU kernels may sum in
    another order (differences of ~1e-7 per activation), which can flip a near-tie prediction only rarely."""
    sections = {"freeze": {"strategy": "depth", "depth": 2}, "trainer": {"max_epochs": 3}}
    if family == "bert":
        sections.update(backbone={"name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24},
                        data={"name": "rotten-tomatoes", "image_size": None, "train_limit": 48, "eval_limit": 32})
    cached = _fit(tmp_path, "cached", **sections).metrics
    uncached = _fit(tmp_path, "plain", **sections, cache={"mode": "off"}).metrics
    assert cached["cache/used"] is True and uncached["cache/used"] is False
    for key in ("test/acc", "val/acc", "test/f1_macro", "train/loss", "val/loss"):
        assert cached[key] == pytest.approx(uncached[key], abs=1e-4), key


def test_run_json_records_the_run_without_wandb(tmp_path):
    result = _fit(tmp_path, "rec", freeze={"strategy": "depth", "depth": 2}, seed=3, data={"split_seed": 2})
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["training_seed"] == 3 and record["data_split_seed"] == 2
    assert record["weights_source"] == "none" and len(record["weights_digest"]) == 32
    assert torch.__version__.startswith(record["versions"]["torch"]) and record["accelerator"] == "cpu"
    assert record["cache/used"] is True and record["cache/key"] == result.metrics["cache/key"]
    assert "git_sha" in record and "git_dirty" in record and isinstance(record["command"], list)


def test_cache_key_lands_in_wandb_config(tmp_path, monkeypatch):
    from tl_research.adapters.wandb import decode, run_file

    monkeypatch.setenv("WANDB_MODE", "offline")
    m = _fit(tmp_path, "wb", freeze={"strategy": "depth", "depth": 2}, tracking={"mode": "offline"}).metrics
    config = decode(run_file(m["wandb_dir"]))["config"]
    assert config["cache/key"] == m["cache/key"] and config["cache/used"] is True


def test_cli_fit_reports_cache_in_a_subprocess(tmp_path):
    import yaml

    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path, freeze={"strategy": "linear_probe"})))
    done = subprocess.run([sys.executable, "-m", "tl_research.cli", "fit", str(cfg), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["cache/used"] is True and m["probe/solver"] == "lbfgs" and "probe/l2" in m
