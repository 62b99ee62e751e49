"""The statistics of every table, plot and claim check: intervals, paired tests, multiple-comparison control.

All intervals are 95 % by default and never leave [0, 1] for accuracies. Methods, with their references:

- `wilson`: the Wilson score interval of one run's accuracy k/m (Wilson 1927; Brown, Cai & DasGupta 2001 show
  it keeps its coverage at small m, unlike the Wald interval).
- `cell_interval`: a hierarchical bootstrap over seeds *and* test examples (Davison & Hinkley 1997, ch. 3.8:
  resample the top level, then within each chosen unit). For an accuracy, resampling the m examples of a seed
  with replacement gives Binomial(m, acc) correct answers, so examples are resampled exactly by binomial draws.
  Percentile interval. With one seed it is that run's Wilson interval; Student-t on request, only for n >= 3.
- `paired_difference`: the mean paired difference (same seeds, same test examples) with the same hierarchical
  bootstrap: per seed, the 2x2 table of (a right, b right) is resampled by multinomial draws.
- `sign_flip_test`: the exact paired permutation test over seeds (Fisher 1935; Good 2005): every assignment of
  signs to the per-seed differences (Monte Carlo beyond 16 seeds). At n seeds its smallest p is 2 / 2^n.
- `wilcoxon`: the signed-rank test (scipy), only for n >= 6, where it can reach p < 0.05.
- `mcnemar`: McNemar's exact (binomial) test on the discordant pairs of one shared test set, for one seed per
  cell (McNemar 1947; Fagerland, Lydersen & Laake 2013 recommend the exact / mid-p form at small counts).
- `holm`: Holm's step-down adjustment (Holm 1979), over all comparisons of one table.
- `accuracy_interval`, `difference_interval`: for the crossed design every finding has (every seed scores the
  same test examples), from (seeds x examples) 0/1 matrices: the two-way random-effects (crossed) variance of the
  grand mean from the ANOVA mean squares (Searle, Casella & McCulloch 1992, ch. 4; the "seeds and items both
  random" setting of Clark 1973 and Baayen, Davidson & Bates 2008) with Satterthwaite's (1946) degrees of freedom
  and a t quantile. Their coverage at 3-20 seeds is simulated in `benchmarks/coverage.py`
  (benchmarks/results/coverage.md). Tables and claims do not use them yet.
- `seeds_needed`: seeds for a target interval width from the observed seed variance (width ~ 1 / sqrt(n)).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import binomtest, norm

ALPHA = 0.05


def wilson(correct: float, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion correct / total."""
    if total <= 0:
        return 0.0, 1.0
    z = norm.ppf(0.5 + confidence / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # bootstrap | wilson | t | seeds-bootstrap | none

    @property
    def width(self) -> float:
        return self.high - self.low


def cell_interval(values: list[float], sizes: list[int] | None = None, method: str = "bootstrap",
                  confidence: float = 0.95, resamples: int = 4000, seed: int = 0) -> Interval:
    """Interval of a cell's mean over seeds. `sizes`: each seed's test-set size when `values` are accuracies
    (enables resampling examples and the Wilson interval at n = 1); without it the bootstrap is over seeds only."""
    n = len(values)
    values_a = np.asarray(values, dtype=float)
    if n == 1:
        if sizes is None:
            return Interval(values_a[0], values_a[0], "none")
        return Interval(*wilson(round(values_a[0] * sizes[0]), sizes[0], confidence), "wilson")
    if method == "t":
        if n < 3:
            raise ValueError("a Student-t interval needs at least 3 seeds")
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values_a.std(ddof=1) / math.sqrt(n)
        return Interval(values_a.mean() - half, values_a.mean() + half, "t")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(resamples, n))  # seeds, with replacement
    if sizes is None:
        means = values_a[pick].mean(1)
        name = "seeds-bootstrap"
    else:
        m = np.asarray(sizes)[pick]
        means = (rng.binomial(m, values_a[pick]) / m).mean(1)  # then examples within each chosen seed
        name = "bootstrap"
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(lo), float(hi), name)


def paired_difference(a: list[float], b: list[float], tables: list[np.ndarray] | None = None,
                      confidence: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, Interval]:
    """Mean of a - b over paired seeds and its bootstrap interval. `tables`: per seed the 2x2 counts
    [[both right, only a right], [only b right, both wrong]] on the shared test set (resampled by multinomial
    draws); without them, seeds only."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(resamples, n)) if n > 1 else np.zeros((resamples, 1), dtype=int)
    if tables is not None:
        flat = np.stack([np.asarray(t, dtype=float).reshape(4) for t in tables])
        sizes = flat.sum(1)
        draws = np.stack([rng.multinomial(int(sizes[s]), flat[s] / sizes[s], size=resamples) for s in range(n)], 1)
        diffs = (draws[..., 1] - draws[..., 2]) / sizes  # (resamples, seeds)
        stat = np.take_along_axis(diffs, pick, 1).mean(1)
        name = "bootstrap"
    elif n > 1:
        stat = d[pick].mean(1)
        name = "seeds-bootstrap"
    else:
        return float(d.mean()), Interval(float(d[0]), float(d[0]), "none")
    lo, hi = np.quantile(stat, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(d.mean()), Interval(float(lo), float(hi), name)


def _crossed(x: np.ndarray, confidence: float) -> tuple[float, Interval]:
    """Mean of a (seeds x examples) matrix and its interval under the crossed random-effects model
    x_sj = mu + a_s + b_j + e_sj: the variance of the grand mean, sigma_a^2/S + sigma_b^2/N + sigma_e^2/(SN), is
    estimated from the two-way ANOVA mean squares as (MS_seed + MS_example - MS_residual) / (S N), with
    Satterthwaite's degrees of freedom for that linear combination and a Student-t quantile."""
    s, n = x.shape
    mean = float(x.mean())
    if s < 2 or n < 2:
        raise ValueError("a crossed interval needs at least 2 seeds and 2 test examples")
    seed_means, example_means = x.mean(1), x.mean(0)
    ms = np.array([n * np.sum((seed_means - mean) ** 2) / (s - 1),
                   s * np.sum((example_means - mean) ** 2) / (n - 1),
                   np.sum((x - seed_means[:, None] - example_means[None, :] + mean) ** 2) / ((s - 1) * (n - 1))])
    df = np.array([s - 1, n - 1, (s - 1) * (n - 1)], dtype=float)
    # the variance of the mean as a combination of the mean squares; a component whose moment estimate is negative
    # is set to zero (its mean square then drops out together with the residual it is measured against)
    seed_on, example_on = ms[0] > ms[2], ms[1] > ms[2]
    coef = np.array([float(seed_on), float(example_on), 1.0 - seed_on - example_on]) / (s * n)
    var = float(coef @ ms)
    terms = (coef * ms) ** 2 / df
    dof = var ** 2 / float(terms.sum()) if terms.sum() > 0 else float(s * n - 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(max(var, 0.0))
    return mean, Interval(mean - half, mean + half, "crossed-t")


def accuracy_interval(correct: np.ndarray, confidence: float = 0.95) -> Interval:
    """Interval of a cell's accuracy from its (seeds, examples) 0/1 matrix on one shared test set: the crossed
    random-effects interval (seeds and test examples both random; see `_crossed`), clipped to [0, 1]. One seed:
    the Wilson interval of that run (the seed term cannot be estimated, and says so in `method`)."""
    x = np.asarray(correct, dtype=float)
    if x.ndim != 2:
        raise ValueError("correct: expected a (seeds, examples) matrix")
    if x.shape[0] == 1:
        low, high = wilson(float(x.sum()), x.shape[1], confidence)
        return Interval(low, high, "wilson-one-seed")
    _, iv = _crossed(x, confidence)
    return Interval(max(0.0, iv.low), min(1.0, iv.high), iv.method)


def difference_interval(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95,
                        ) -> tuple[float, Interval]:
    """Mean difference a - b of two cells' (seeds, examples) 0/1 matrices, rows paired by seed (the same seed /
    support set) and columns by test example, and its crossed random-effects interval (clipped to [-1, 1])."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"correct_a, correct_b: expected two (seeds, examples) matrices of one shape, got "
                         f"{a.shape} and {b.shape}")
    d = a - b
    if d.shape[0] == 1:  # one seed: the paired (McNemar-style) interval over examples alone
        n = d.shape[1]
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
        mean = float(d.mean())
        return mean, Interval(max(-1.0, mean - half), min(1.0, mean + half), "paired-t-one-seed")
    mean, iv = _crossed(d, confidence)
    return mean, Interval(max(-1.0, iv.low), min(1.0, iv.high), iv.method)


def sign_flip_test(d: list[float], exact_up_to: int = 16, resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided exact paired permutation test of mean(d) = 0: the share of sign assignments whose |mean| is at
    least the observed one (all 2^n of them up to `exact_up_to` seeds, else a Monte Carlo sample)."""
    d_a = np.asarray(d, dtype=float)
    n = len(d_a)
    observed = abs(d_a.mean())
    if n <= exact_up_to:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(resamples, n))
    stats = np.abs((signs * d_a).mean(1))
    return float(np.mean(stats >= observed - 1e-12))


def min_sign_flip_p(n: int) -> float:
    """The smallest p-value the exact sign-flip test can give with n seeds."""
    return min(1.0, 2.0 / 2 ** n)


def wilcoxon(d: list[float]) -> float:
    if len(d) < 6:
        raise ValueError("the Wilcoxon test is only used from 6 pairs on (below it cannot reach p < 0.05)")
    return float(stats.wilcoxon(d).pvalue) if np.any(np.asarray(d) != 0) else 1.0


def mcnemar(only_a: int, only_b: int) -> float:
    """Exact McNemar test: two-sided binomial test of the discordant pairs against 1/2."""
    total = only_a + only_b
    return 1.0 if total == 0 else float(binomtest(only_a, total, 0.5).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def seeds_needed(std: float, target_width: float, confidence: float = 0.95) -> int:
    """Seeds for a normal-theory interval of `target_width` given the seed standard deviation."""
    if std <= 0:
        return 1
    z = norm.ppf(0.5 + confidence / 2)
    return max(2, math.ceil((2 * z * std / target_width) ** 2))


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a row against a reference row in one column."""

    diff: float
    interval: Interval
    p: float  # sign-flip over seeds (n >= 2) or McNemar (n = 1); NaN when no valid test exists
    test: str  # sign-flip | mcnemar | none
    n: int
    reachable: bool  # can this test reach p < alpha with this n at all?
    p_wilcoxon: float = float("nan")  # also reported from 6 pairs on


def compare(a: list[float], b: list[float], tables: list[np.ndarray] | None = None,
            alpha: float = ALPHA) -> Comparison:
    """Paired comparison valid at small n: McNemar's exact test with one seed (needs the 2x2 table), the exact
    sign-flip test from 2 seeds (plus Wilcoxon from 6)."""
    n = len(a)
    diff, interval = paired_difference(a, b, tables)
    d = (np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).tolist()
    if n == 1:
        if tables is None:
            return Comparison(diff, interval, float("nan"), "none", n, False)
        t = np.asarray(tables[0])
        return Comparison(diff, interval, mcnemar(int(t[0, 1]), int(t[1, 0])), "mcnemar", n, True)
    return Comparison(diff, interval, sign_flip_test(d), "sign-flip", n, min_sign_flip_p(n) < alpha,
                      wilcoxon(d) if n >= 6 else float("nan"))


def agreement_table(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[[both right, only a right], [only b right, both wrong]] on one shared test set."""
    ra, rb = pred_a == labels, pred_b == labels
    return np.array([[np.sum(ra & rb), np.sum(ra & ~rb)], [np.sum(~ra & rb), np.sum(~ra & ~rb)]])
