"""`tlr rank`: candidates (backbone x freeze depth) scored from frozen features before any training.

Features at depth k are the feature cache's prefix outputs for the first k groups (computed once, then read),
pooled to one vector per example (spatial mean for feature maps, token mean for token states). The scores are the
registered ones (registry.py); `source` scores (LEEP, NCE) use the source model's own classifier where the offline
weights ship one, and are then the same for every depth of that backbone (they judge the whole source model).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tl_research.backbones import Backbone
from tl_research.backbones.base import SplitUnsupported
from tl_research.backbones.families import foreign_options
from tl_research.backbones.offline import source_classifier
from tl_research.cache.features import CacheDecision, cached_rows
from tl_research.config import Experiment
from tl_research.data.datamodule import load_data, select
from tl_research.data.registry import RawDataset
from tl_research.data.splits import balanced_take
from tl_research.errors import UserError
from tl_research.pipeline import build_backbone_from
from tl_research.scores.registry import Score, score_names, scores


@dataclass
class Candidate:
    backbone: str
    depth: int
    num_groups: int
    scores: dict[str, float] = field(default_factory=dict)  # NaN: not defined for this candidate (LEEP without
    # a source classifier)
    seconds: float = 0.0  # features (extracted or read) + its scores (LEEP/NCE: with a backbone's first depth)
    examples: int = 0

    def row(self) -> dict[str, Any]:
        scored = {k: None if np.isnan(v) else v for k, v in self.scores.items()}  # JSON has no NaN
        return {"backbone": self.backbone, "depth": self.depth, "groups": self.num_groups, **scored,
                "seconds": round(self.seconds, 3), "examples": self.examples}


def pooled(row: np.ndarray) -> np.ndarray:
    """One vector from a cached row: (C, H, W) feature maps -> channel means; (tokens, H) -> token mean."""
    row = np.asarray(row, dtype=np.float32)
    if row.ndim == 3:
        return row.mean((1, 2))
    if row.ndim == 2:
        return row.mean(0)
    return row


def _subset(labels: np.ndarray, indices: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    classes = len(np.unique(labels[indices]))
    return balanced_take(indices, labels, per_class * classes, seed)


def rank(exp: Experiment, backbones: list[str], depths: list[int] | None = None, per_class: int = 50,
         ) -> list[Candidate]:
    """Score every backbone x depth on `exp`'s dataset (its training split, class-balanced, `per_class` examples
    each; the probe is validated on as many validation examples). `depths` None: each backbone's full depth."""
    out = []
    for name in backbones:
        chosen = candidate_experiment(exp, name)
        backbone = build_backbone_from(chosen)
        n = len(backbone.layer_groups())
        raw = load_data(exp.data, backbone.modality)
        split, _ = select(raw, exp.data)
        train = _subset(raw.labels, split.train, per_class, exp.data.split_seed)
        val = _subset(raw.labels, split.val, per_class, exp.data.split_seed + 1)
        # LEEP and NCE judge the whole source model: once per backbone, timed with its first depth
        t0 = time.perf_counter()
        head = source_classifier(name) if exp.backbone.weights == "offline" else None
        source = _source_scores(chosen, backbone, raw, n, train, head)
        source_seconds = time.perf_counter() - t0
        for k in depths or [n]:
            if not 1 <= k <= n:
                raise UserError(f"--depths: {k} is outside 1..{n} for {name} (the number of frozen groups whose "
                                f"output is scored)")
            cand = Candidate(name, k, n, examples=len(train))
            t0 = time.perf_counter()
            feats = _features(chosen, backbone, raw, k, np.concatenate([train, val]))
            f_train, f_val = feats[: len(train)], feats[len(train):]
            y_train, y_val = raw.labels[train], raw.labels[val]
            cand.scores = {s.name: source[s.name] if s.kind == "source" else _score(s, f_train, y_train, f_val, y_val)
                           for s in scores()}
            cand.seconds = time.perf_counter() - t0 + source_seconds
            source_seconds = 0.0
            out.append(cand)
    return out


def candidate_experiment(exp: Experiment, name: str) -> Experiment:
    """`exp` with backbone `name`: the options of the experiment's backbone section that `name`'s family does not
    take go back to their defaults (one experiment ranks backbones of several families)."""
    foreign = foreign_options(name)
    reset = {f.name: f.default for f in dataclasses.fields(exp.backbone) if f.name in foreign}
    return dataclasses.replace(exp, backbone=dataclasses.replace(exp.backbone, name=name, **reset))


def _score(score: Score, train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray,
           ) -> float:
    if score.kind == "validated":
        return float(score.fn(train, train_labels, val, val_labels))
    return float(score.fn(train, train_labels))


def _features(exp: Experiment, backbone: Backbone, raw: RawDataset, k: int, indices: np.ndarray) -> np.ndarray:
    try:
        decision = CacheDecision(True, k, "tlr rank", backbone.split(k))
    except SplitUnsupported as exc:
        raise UserError(f"--depths: {backbone.name} cannot be cut after group {k - 1} ({exc})") from None
    rows, _ = cached_rows(exp, backbone, decision, raw, indices)
    return np.stack([pooled(rows[int(i)]) for i in indices])


def _source_scores(exp: Experiment, backbone: Backbone, raw: RawDataset, n: int, train: np.ndarray,
                   head: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float]:
    """The `source` scores from the source classifier on the whole network's pooled features (NaN without one)."""
    source = [s for s in scores() if s.kind == "source"]
    if head is None:
        return {s.name: float("nan") for s in source}
    feats = torch.as_tensor(_features(exp, backbone, raw, n, train))
    probs = torch.softmax(feats @ head[0].T + head[1], -1).numpy()
    return {s.name: float(s.fn(probs, raw.labels[train])) for s in source}


def check_score(by: str) -> str:
    """`by` as a registered score name (checked before anything is computed)."""
    if by not in score_names():
        raise UserError(f"--by: {by!r} is not a score (allowed: {', '.join(score_names())})")
    return by


def ordered(candidates: list[Candidate], by: str = "logme") -> list[Candidate]:
    """Best first by score `by` (candidates without it last)."""
    check_score(by)
    return sorted(candidates, key=lambda c: (np.isnan(c.scores.get(by, np.nan)), -c.scores.get(by, -np.inf)))


def to_markdown(candidates: list[Candidate]) -> str:
    names = score_names()
    head = "| backbone | depth | " + " | ".join(names) + " | seconds |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for c in candidates:
        vals = " | ".join("–" if np.isnan(c.scores[s]) else f"{c.scores[s]:.4g}" for s in names)
        lines.append(f"| {c.backbone} | {c.depth}/{c.num_groups} | {vals} | {c.seconds:.2f} |")
    return "\n".join(lines) + "\n"
