"""The registry of transferability scores: a score is one module in this package with one function under
`@register_score(name, kind, order)`; `tlr rank`, `study.prefilter`, the CLI's choices, tables and docs read the
registry, so nothing else changes when a score is added.

What a score receives depends on its `kind` (all arrays over the training examples `tlr rank` draws):
- `features`: `(features (N, D), labels (N,))`: pooled frozen features at the candidate's depth;
- `validated`: `(features, labels, val_features, val_labels)`: a score fitted on training and judged on validation;
- `source`: `(source_probs (N, Z), labels)`: the source classifier's probabilities from the whole network, computed
  once per backbone (NaN for a backbone without a source classifier).
Higher is better for every score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tl_research.registry import Registry, import_package

Kind = Literal["features", "validated", "source"]


@dataclass(frozen=True)
class Score:
    name: str
    kind: Kind
    order: int  # its column in tables (scores are listed by this, then by name)
    fn: Callable[..., float]


SCORES: Registry[Score] = Registry("score")
# the modules of this package that are machinery, not scores
_MACHINERY = {"registry", "rank", "agreement"}


def register_score(name: str, kind: Kind, order: int) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register `fn` as score `name` (the function itself stays a plain function over arrays)."""
    def add(fn: Callable[..., float]) -> Callable[..., float]:
        SCORES.register(name)(Score(name, kind, order, fn))
        return fn

    return add


def scores() -> list[Score]:
    """Every score, in table order (each score module of this package is imported once, on the first call)."""
    import_package("tl_research.scores", _MACHINERY)
    return sorted((s for _, s in SCORES.items()), key=lambda s: (s.order, s.name))


def score_names() -> list[str]:
    return [s.name for s in scores()]
