"""Every registered transferability score, through the registry that `tlr rank` and `study.prefilter` read: it
takes what its kind promises, returns a finite float, and prefers informative inputs to noise."""

import numpy as np
import pytest

from tl_research.scores.registry import scores


def clusters(n_per=30, classes=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per)
    return rng.normal(0, 3, (classes, dim))[y] + rng.normal(0, 0.5, (len(y), dim)), y


def evaluate(score, informative: bool) -> float:
    f, y = clusters()
    fv, yv = clusters(seed=1)
    if not informative:
        rng = np.random.default_rng(2)
        f, fv = rng.normal(0, 3, f.shape), rng.normal(0, 3, fv.shape)
    if score.kind == "features":
        return score.fn(f, y)
    if score.kind == "validated":
        return score.fn(f, y, fv, yv)
    # a source classifier over 5 source classes: aligned with the target classes, or blind to them
    probs = np.full((len(y), 5), 0.02)
    probs[np.arange(len(y)), y if informative else np.random.default_rng(3).integers(0, 5, len(y))] = 0.92
    return score.fn(probs, y)


def test_the_registry_lists_every_score_once_in_table_order():
    found = scores()
    names = [s.name for s in found]
    assert len(names) == len(set(names)) and {"logme", "leep", "nce", "h_score", "knn", "probe"} <= set(names)
    assert [s.order for s in found] == sorted(s.order for s in found)
    assert all(s.kind in ("features", "validated", "source") for s in found)


@pytest.mark.parametrize("score", scores(), ids=lambda s: s.name)
def test_every_score_prefers_informative_inputs(score):
    good, bad = evaluate(score, True), evaluate(score, False)
    assert np.isfinite(good) and np.isfinite(bad)
    assert good > bad, (score.name, good, bad)
