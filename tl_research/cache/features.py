"""The feature cache in a run: whether a run may use it, its key, extraction of frozen-prefix outputs, and the data
module that serves them.

A run may use the cache when the first k groups stay frozen and untouched for the whole run (`frozen_prefix`), the
backbone can be split there, and nothing random reaches the prefix: no train-time augmentation, and frozen BN layers
in eval mode (`freeze.bn` frozen or eval_stats). Rows are keyed by everything that determines them: the options the
backbone, data and cache sections declare `keyed`, a digest of the weights loaded, k and the grouping, what the
backbone asks of its inputs, and the dataset's content.
Rows are stored per pool index, so runs that need other rows of the same pool (other shots, caps, seeds) compute
only what is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tl_research.backbones.base import Backbone, BackboneSplit, SplitUnsupported, weights_digest
from tl_research.cache.store import FeatureStore, Rows
from tl_research.config import Experiment
from tl_research.data.datamodule import TransferDataModule, build_augment, input_collates
from tl_research.data.registry import RawDataset
from tl_research.data.splits import Split
from tl_research.inputs import ImageSpec, TextSpec
from tl_research.paths import default_cache_dir
from tl_research.runtime.distributed import global_rank
from tl_research.schema import features_options

FORMAT = 2  # bump when what a row holds (or how its key is made) changes


@dataclass
class CacheDecision:
    use: bool
    k: int
    reason: str  # why (not): recorded in metrics.json and run.json
    split: BackboneSplit | None = None


def decide(exp: Experiment, backbone: Backbone, k: int, *, required: bool = False) -> CacheDecision:
    """Whether the run may train on cached outputs of the first `k` groups (`required`: an L-BFGS probe needs
    features computed once even when cache.mode is off; it then uses a throw-away store)."""
    if exp.cache.mode == "off" and not required:
        return CacheDecision(False, k, "cache.mode=off")
    if k == 0:
        return CacheDecision(False, k, "no layer group stays frozen for the whole run")
    if build_augment(8, **dataclasses.asdict(exp.data.augment)) is not None:
        return CacheDecision(False, k, "train-time augmentation changes the frozen prefix's input every epoch")
    if exp.freeze.bn == "train":
        return CacheDecision(False, k, "freeze.bn=train updates BatchNorm statistics inside the frozen groups")
    try:
        split = backbone.split(k)
    except SplitUnsupported as exc:
        return CacheDecision(False, k, f"the backbone cannot be split after group {k - 1}: {exc}")
    return CacheDecision(True, k, "frozen prefix of the first k groups", split)


_DIGESTS: dict[int, tuple[RawDataset, str]] = {}  # the pools this process digested (loaded pools are reused)


def dataset_digest(raw: RawDataset) -> str:
    """A digest of the pool's content: labels, class names and inputs (files: their paths, sizes and mtimes; a
    Hugging Face dataset: its fingerprint)."""
    hit = _DIGESTS.get(id(raw))
    if hit is not None and hit[0] is raw:
        return hit[1]
    if len(_DIGESTS) >= 2:
        _DIGESTS.pop(next(iter(_DIGESTS)))
    _DIGESTS[id(raw)] = (raw, _digest(raw))
    return _DIGESTS[id(raw)][1]


def _digest(raw: RawDataset) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(raw.labels.tobytes())
    h.update("\0".join(raw.classes).encode())
    if isinstance(raw.inputs, np.ndarray):
        h.update(str(raw.inputs.shape).encode())
        h.update(np.ascontiguousarray(raw.inputs).tobytes())
    elif hasattr(raw.inputs, "fingerprint"):  # an Arrow-backed Hugging Face dataset: its fingerprint and rows
        h.update(f"{raw.inputs.fingerprint}\0".encode() + np.asarray(raw.inputs.indices).tobytes())
    elif hasattr(raw.inputs, "paths"):
        for p in raw.inputs.paths:
            st = Path(p).stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        for text in raw.inputs:
            h.update(str(text).encode() + b"\0")
    return h.hexdigest()


def input_key(spec: ImageSpec | TextSpec) -> dict[str, Any]:
    """What the backbone asks of its inputs (from its pretrained config): image size and normalisation, or the
    tokenizer (its class and a digest of its vocabulary) and truncation length."""
    if isinstance(spec, ImageSpec):
        return {"input_size": spec.input_size, "mean": list(spec.mean), "std": list(spec.std),
                "resize": "pil-bilinear-uint8"}
    vocab = spec.tokenizer.get_vocab()
    return {"tokenizer": type(spec.tokenizer).__name__, "max_length": spec.max_length,
            "vocab": hashlib.blake2b(repr(sorted(vocab.items())).encode(), digest_size=8).hexdigest()}


def cache_key(exp: Experiment, backbone: Backbone, raw: RawDataset, k: int, weights: str) -> dict[str, Any]:
    """Everything that determines a row, in words (the store hashes it): the options of the backbone, data and
    cache sections declared `keyed` (schema.py), the weights actually loaded, the cut, what the backbone asks of
    its inputs, and the dataset's content."""
    return {"format": FORMAT, "backbone": features_options(exp.backbone), "weights": weights,
            "weights_source": backbone.weights_source, "k": k, "groups": [g.name for g in backbone.layer_groups()],
            "inputs": input_key(backbone.preprocessing), "data": features_options(exp.data),
            "content": dataset_digest(raw), "cache": features_options(exp.cache)}


def extract(split: BackboneSplit, backbone: Backbone, raw: RawDataset, collate: Any, indices: np.ndarray,
            batch_size: int, device: torch.device, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Prefix outputs for pool `indices`, in eval mode: (rows, None), or for token states (every real token's row
    concatenated, offsets)."""
    backbone.eval().to(device)
    parts, lengths = [], []
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            items = [(raw.inputs[int(j)], int(raw.labels[int(j)])) for j in indices[start:start + batch_size]]
            inputs, _ = collate(items)
            inputs = {k: v.to(device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(device)
            out = split.prefix(inputs)
            if split.kind == "tokens":
                mask = out["attention_mask"].bool()
                for h, m in zip(out["hidden_states"], mask):
                    parts.append(h[m].float().cpu().numpy())
                    lengths.append(int(m.sum()))
            else:
                parts.append(out.float().cpu().numpy())
    backbone.to("cpu")
    rows = np.concatenate(parts).astype(dtype)
    if split.kind != "tokens":
        return rows, None
    return rows, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


@dataclass(frozen=True)
class FeatureCollate:
    """Cached rows -> a batch for the suffix: stacked float tensors, or padded token states with their mask."""

    kind: str

    def __call__(self, items: list[tuple[np.ndarray, int]]) -> tuple[Any, torch.Tensor]:
        labels = torch.tensor([y for _, y in items])
        if self.kind != "tokens":
            return torch.from_numpy(np.stack([np.asarray(x, dtype=np.float32) for x, _ in items])), labels
        longest = max(len(x) for x, _ in items)
        hidden = torch.zeros(len(items), longest, items[0][0].shape[-1])
        mask = torch.zeros(len(items), longest, dtype=torch.long)
        for i, (x, _) in enumerate(items):
            hidden[i, :len(x)] = torch.tensor(np.asarray(x, dtype=np.float32))  # a copy: cached rows are read-only
            mask[i, :len(x)] = 1
        return {"hidden_states": hidden, "attention_mask": mask}, labels


@dataclass
class CacheReport:
    """What metrics.json and run.json record about the cache."""

    used: bool
    reason: str
    k: int
    key: str | None = None
    weights: str | None = None  # digest of the weights loaded
    rows_computed: int = 0
    extract_seconds: float = 0.0
    folder: str | None = None

    def metrics(self) -> dict[str, Any]:
        out = {"cache/used": self.used, "cache/reason": self.reason, "cache/k": self.k}
        if self.key is not None:
            out.update({"cache/key": self.key, "cache/rows_computed": self.rows_computed,
                        "cache/extract_seconds": round(self.extract_seconds, 3)})
        return out


def cached_rows(exp: Experiment, backbone: Backbone, decision: CacheDecision, raw: RawDataset, indices: np.ndarray,
                root: Path | None = None) -> tuple[Rows, CacheReport]:
    """The prefix outputs for pool `indices`, from the store (computing the missing rows once)."""
    assert decision.split is not None
    weights = weights_digest(backbone)
    store = FeatureStore(root or (Path(exp.cache.dir).expanduser() if exp.cache.dir else default_cache_dir()),
                         cache_key(exp, backbone, raw, decision.k, weights))

    if exp.cache.mode == "refresh" and global_rank(exp.trainer) == 0:  # DDP: rank 0 refreshed before launching
        store.clear()
    collate, _ = input_collates(backbone.preprocessing, exp.data)
    use_cuda = exp.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    batch = max(64, exp.data.eval_batch_size or exp.data.batch_size)
    t0 = time.perf_counter()
    rows, computed = store.ensure(np.unique(indices), lambda idx: extract(
        decision.split, backbone, raw, collate, idx, batch, device, exp.cache.dtype))
    return rows, CacheReport(True, decision.reason, decision.k, store.digest, weights, computed,
                             time.perf_counter() - t0, str(store.folder))


def cached_datamodule(exp: Experiment, raw: RawDataset, split: Split, rows: Rows, kind: str,
                      info: dict[str, Any]) -> TransferDataModule:
    """The run's data module over cached rows: same split, sampler and batch sizes as the uncached one."""
    d = exp.data
    collate = FeatureCollate(kind)
    # evaluation batches of cached rows are cheap to stack, and their size changes no result
    eval_batch = max(d.eval_batch_size or d.batch_size, 512)
    return TransferDataModule(replace(raw, inputs=rows), split, collate, batch_size=d.batch_size,
                              eval_batch_size=eval_batch, seed=exp.seed, subset_info=info)
