"""The statistics of every table, plot, claim check and plan: intervals, paired comparisons, one decision rule, power.

Every finding of this project has a crossed design: each seed (a training run, possibly on its own support set) is
scored on the *same* test examples, so seeds and test examples are both random and crossed. Intervals and tests are
95 % by default; accuracies never leave [0, 1]. Methods, with their references:

- `accuracy_interval`, `difference_interval`, `compare_matrices`: from (seeds x examples) 0/1 matrices (a
  difference pairs rows by seed and columns by test example), the two-way random-effects (crossed) variance of the
  grand mean, sigma_seed^2/S + sigma_example^2/N + sigma_residual^2/(SN), estimated from the ANOVA mean squares
  (Searle, Casella & McCulloch 1992, ch. 4; the "subjects and items both random" setting of Clark 1973 and Baayen,
  Davidson & Bates 2008), with Satterthwaite's (1946) degrees of freedom and a Student-t quantile. The test of a
  difference is the t test of that same statistic, so its p < alpha exactly when the interval excludes 0. Coverage
  at 3-20 seeds x 100-2,000 examples is simulated in `benchmarks/coverage.py` (benchmarks/results/coverage.md).
  One seed: the Wilson interval of that run (Wilson 1927; Brown, Cai & DasGupta 2001) / the paired t interval over
  examples; the seed term then cannot be estimated, and `method` says so.
- `seeds_interval`, `compare_seeds`: the fallback when per-example predictions are missing (old studies, metrics
  that are not a test accuracy): Student-t over seeds only, labelled `seeds-t` (it leaves out the test-set term).
- `tasks_interval`, `compare_tasks`: the mean over a suite's tasks (or a group of them) with the tasks taken as a
  sample of tasks: Student-t over the per-task means (paired per task for a difference), T - 1 degrees of freedom
  (`t-over-tasks`) — the summary-statistics approach to random effects (Holmes & Friston 1998): each task's mean is
  one observation, so the spread of the task means carries both the between-task variance and each task's own
  estimation noise. One task: no interval. Coverage on simulated suites of 3-19 tasks in
  `benchmarks/suite_coverage.py` (benchmarks/results/suite_coverage.md).
- `side` and `bonferroni`: the one decision rule of tables, plots and claims. A comparison is decided by its
  interval against a margin (wholly above / wholly below / undecided); a family of k comparisons (a table's
  comparisons with its best rows, a finding's claims) uses simultaneous intervals at confidence 1 - alpha/k
  (Bonferroni 1936; Dunn 1961), and every printed p is the family-adjusted min(1, k p) of the same t statistic.
- `components`, `power`, `seeds_for`, `examples_for`, `seeds_for_width`: the variance components of a pilot's
  matrix, and the seeds / test examples a design needs for a target power at the family's level, or for a target
  interval width. Power is P(|estimate| > half-width) on the claimed side, the estimate normal around the effect
  with the design's crossed variance (Cohen 1988, ch. 2, with that variance in place of sigma^2 / n) and the
  half-width simulated from the mean squares' scaled chi-square distributions (Searle et al. 1992, ch. 4), so the
  plan pays for the few degrees of freedom a handful of seeds gives.
- `wilson`: the Wilson score interval of one run's accuracy k / m.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import norm

ALPHA = 0.05
POWER = 0.8


def wilson(correct: float, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion correct / total."""
    if total <= 0:
        return 0.0, 1.0
    z = norm.ppf(0.5 + confidence / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def at_chance(acc: float, total: int, classes: int, first_loss: float | None, last_loss: float | None) -> bool:
    """Did a finished run learn nothing? Its accuracy is not above chance (the Wilson 95 % interval of `acc` on
    `total` examples reaches 1/`classes`) and its training loss ended no lower than 90 % of its first value. Such a
    run (a collapsed fine-tuning, an lr just short of divergence) is a failed fit, not a measurement of the method."""
    if first_loss is None or last_loss is None or total <= 0 or classes < 2:
        return False
    return wilson(acc * total, total)[0] <= 1 / classes and last_loss >= 0.9 * first_loss


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # crossed-t | wilson-one-seed | paired-t-one-seed | seeds-t | none

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class Components:
    """Variance components of a (seeds x examples) matrix x_sj = mu + a_s + b_j + e_sj (moment estimates from the
    two-way ANOVA, negative ones set to zero)."""

    seed: float
    example: float
    residual: float

    def variance(self, seeds: int, examples: int) -> float:
        """Variance of the grand mean of a seeds x examples design."""
        return self.seed / seeds + self.example / examples + self.residual / (seeds * examples)


@dataclass(frozen=True)
class Comparison:
    """A paired difference a - b with its interval and the t test of the same statistic."""

    diff: float
    interval: Interval
    p: float  # two-sided, family-adjusted when the interval is (NaN: no test, e.g. one seed and no predictions)
    n: int  # paired seeds
    confidence: float = 0.95

    @property
    def test(self) -> str:
        return self.interval.method


def _mean_squares(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, n = x.shape
    mean = x.mean()
    seed_means, example_means = x.mean(1), x.mean(0)
    ms = np.array([n * np.sum((seed_means - mean) ** 2) / (s - 1),
                   s * np.sum((example_means - mean) ** 2) / (n - 1),
                   np.sum((x - seed_means[:, None] - example_means[None, :] + mean) ** 2) / ((s - 1) * (n - 1))])
    return ms, np.array([s - 1, n - 1, (s - 1) * (n - 1)], dtype=float)


def _matrix(x: np.ndarray, name: str = "correct") -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"{name}: expected a (seeds, examples) matrix with at least 2 examples, got shape {x.shape}")
    return x


def components(x: np.ndarray) -> Components:
    """The seed, example and residual variance components of a (seeds x examples) matrix (at least 2 seeds)."""
    x = _matrix(x)
    if x.shape[0] < 2:
        raise ValueError("variance components need at least 2 seeds")
    ms, _ = _mean_squares(x)
    s, n = x.shape
    return Components(max(0.0, (ms[0] - ms[2]) / n), max(0.0, (ms[1] - ms[2]) / s), float(ms[2]))


def crossed_moments(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, variance of the mean and Satterthwaite degrees of freedom under the crossed model: the variance is
    (MS_seed + MS_example - MS_residual) / (S N); a component whose moment estimate is negative is set to zero (its
    mean square then drops out together with the residual it is measured against)."""
    s, n = x.shape
    ms, df = _mean_squares(x)
    seed_on, example_on = ms[0] > ms[2], ms[1] > ms[2]
    coef = np.array([float(seed_on), float(example_on), 1.0 - seed_on - example_on]) / (s * n)
    var = max(float(coef @ ms), 0.0)
    terms = float(((coef * ms) ** 2 / df).sum())
    return float(x.mean()), var, var ** 2 / terms if terms > 0 else float(s * n - 1)


def _t(mean: float, var: float, dof: float, confidence: float, method: str, lo: float, hi: float,
       ) -> tuple[Interval, float]:
    """Interval (clipped to [lo, hi]) and two-sided p of a t statistic."""
    se = math.sqrt(var)
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
    if se > 0:
        p = float(2 * stats.t.sf(abs(mean) / se, dof))
    else:  # no variation at all: the difference is exactly what was observed
        p = 1.0 if mean == 0 else 0.0
    return Interval(max(lo, mean - half), min(hi, mean + half), method), p


def accuracy_interval(correct: np.ndarray, confidence: float = 0.95) -> Interval:
    """Interval of a cell's accuracy from its (seeds, examples) 0/1 matrix on one shared test set: the crossed
    random-effects interval (seeds and test examples both random), clipped to [0, 1]. One seed: the Wilson interval
    of that run (the seed term cannot be estimated, and `method` says so)."""
    x = _matrix(correct)
    if x.shape[0] == 1:
        return Interval(*wilson(float(x.sum()), x.shape[1], confidence), "wilson-one-seed")
    mean, var, dof = crossed_moments(x)
    return _t(mean, var, dof, confidence, "crossed-t", 0.0, 1.0)[0]


def compare_matrices(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95) -> Comparison:
    """a - b from two (seeds, examples) 0/1 matrices, rows paired by seed (same seed / support set) and columns by
    test example: the crossed interval of the difference matrix and its t test (one seed: paired t over examples)."""
    a, b = _matrix(correct_a, "correct_a"), _matrix(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a, correct_b: expected two matrices of one shape, got {a.shape} and {b.shape}")
    d = a - b
    if d.shape[0] == 1:
        n = d.shape[1]
        mean, var, dof, method = float(d.mean()), float(d.var(ddof=1)) / n, n - 1, "paired-t-one-seed"
    else:
        (mean, var, dof), method = crossed_moments(d), "crossed-t"
    interval, p = _t(mean, var, dof, confidence, method, -1.0, 1.0)
    return Comparison(mean, interval, p, d.shape[0], confidence)


def difference_interval(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95,
                        ) -> tuple[float, Interval]:
    """Mean difference a - b of two cells' (seeds, examples) 0/1 matrices and its crossed interval."""
    comp = compare_matrices(correct_a, correct_b, confidence)
    return comp.diff, comp.interval


def seeds_interval(values: list[float], confidence: float = 0.95, size: int | None = None) -> Interval:
    """Fallback interval of a mean over seeds without per-example predictions: Student-t over seeds (`seeds-t`,
    leaves out the test-set term); one seed: that run's Wilson interval when `size` (its test examples) is known."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        if size is None:
            return Interval(float(v[0]), float(v[0]), "none")
        return Interval(*wilson(round(float(v[0]) * size), size, confidence), "wilson-one-seed")
    return _mean_t(v, confidence, "seeds-t")[0]


def _mean_t(v: np.ndarray, confidence: float, method: str) -> tuple[Interval, float]:
    """Student-t interval and p of the mean of independent values (n - 1 degrees of freedom)."""
    return _t(float(v.mean()), float(v.var(ddof=1)) / len(v), len(v) - 1, confidence, method, -math.inf, math.inf)


def _paired(a: list[float], b: list[float], confidence: float, method: str) -> Comparison:
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 1:
        return Comparison(float(d[0]), Interval(float(d[0]), float(d[0]), "none"), float("nan"), 1, confidence)
    interval, p = _mean_t(d, confidence, method)
    return Comparison(float(d.mean()), interval, p, len(d), confidence)


def compare_seeds(a: list[float], b: list[float], confidence: float = 0.95) -> Comparison:
    """Fallback paired comparison over seeds only (paired t over the per-seed differences; one seed: no test)."""
    return _paired(a, b, confidence, "seeds-t")


def tasks_interval(means: list[float], confidence: float = 0.95, lo: float = -math.inf, hi: float = math.inf,
                   ) -> Interval:
    """Interval of the mean over tasks, the tasks a sample of tasks: t over the per-task means (one task: none),
    clipped to [lo, hi] (an accuracy's [0, 1])."""
    v = np.asarray(means, dtype=float)
    if len(v) == 1:
        return Interval(float(v[0]), float(v[0]), "none")
    iv = _mean_t(v, confidence, "t-over-tasks")[0]
    return Interval(max(lo, iv.low), min(hi, iv.high), iv.method)


def compare_tasks(a: list[float], b: list[float], confidence: float = 0.95) -> Comparison:
    """a - b of two rows' means over the same tasks: paired t over the per-task differences (one task: no test)."""
    return _paired(a, b, confidence, "t-over-tasks")


def bonferroni(family: int, alpha: float = ALPHA) -> float:
    """Confidence of each of `family` simultaneous intervals whose joint error is at most alpha."""
    return 1.0 - alpha / max(1, family)


def adjusted(p: float, family: int) -> float:
    """Family-adjusted p: min(1, k p), below alpha exactly when the Bonferroni-level interval excludes the null."""
    return p if p != p else min(1.0, p * max(1, family))


def side(interval: Interval, margin: float = 0.0) -> int:
    """The decision rule: +1 when the interval lies wholly above `margin`, -1 wholly below, 0 undecided (an
    interval with no method decides nothing)."""
    if interval.method == "none":
        return 0
    return 1 if interval.low > margin else -1 if interval.high < margin else 0


def _simulated_half(comps: Components, seeds: int, examples: int, confidence: float, draws: int = 4000,
                    ) -> np.ndarray:
    """Half-widths the crossed interval of a seeds x examples design takes, simulated under its normal theory:
    the three mean squares are independent scaled chi-squares around their expectations (sigma_r^2 + N sigma_s^2,
    sigma_r^2 + S sigma_b^2, sigma_r^2), then truncated, combined and given Satterthwaite's df exactly as
    `crossed_moments` does (fixed random numbers: the same draws for every design, so searches over designs are
    smooth)."""
    s, n = seeds, examples
    expected = np.array([comps.residual + n * comps.seed, comps.residual + s * comps.example, comps.residual])
    # one example (a seeds-only design): only the seed mean square exists
    df = np.maximum(np.array([s - 1, n - 1, (s - 1) * (n - 1)], dtype=float), 1.0)
    exists = np.array([True, n > 1, n > 1])
    ms = exists * expected * np.random.default_rng(0).chisquare(df, size=(draws, 3)) / df
    seed_on, example_on = ms[:, 0] > ms[:, 2], ms[:, 1] > ms[:, 2]
    coef = np.stack([seed_on, example_on, 1.0 - seed_on - example_on], 1) / (s * n)
    var = np.maximum((coef * ms).sum(1), 0.0)
    terms = ((coef * ms) ** 2 / df).sum(1)
    dof = np.where(terms > 0, var ** 2 / np.where(terms > 0, terms, 1.0), s * n - 1)
    return stats.t.ppf(0.5 + confidence / 2, dof) * np.sqrt(var)


def power(effect: float, comps: Components, seeds: int, examples: int, alpha: float = ALPHA) -> float:
    """Chance that the two-sided level-alpha crossed interval of a difference whose true value is `effect` lies
    wholly on its side of 0: the estimate is normal around `effect` (the true variance of the design) and
    independent of the interval's half-width (simulated, `_simulated_half`)."""
    se = math.sqrt(comps.variance(seeds, examples))
    if se == 0:
        return 1.0 if effect != 0 else 0.0
    return float(norm.cdf((abs(effect) - _simulated_half(comps, seeds, examples, 1 - alpha)) / se).mean())


def _fewest(enough: Callable[[int], bool], low: int, high: int) -> int | None:
    """The smallest n in [low, high] for which `enough(n)` holds, by bisection (power and width are monotone in the
    number of seeds and of test examples); None when even `high` is not enough."""
    if not enough(high):
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if not enough(mid) else (low, mid)
    return low


def seeds_for(effect: float, comps: Components, examples: int, alpha: float = ALPHA, target: float = POWER,
              most: int = 1000) -> int | None:
    """Fewest seeds (at least 2) that detect `effect` with power `target` at `examples` test examples (None: not
    within `most` seeds; e.g. the test-set term alone is too large)."""
    return _fewest(lambda s: power(effect, comps, s, examples, alpha) >= target, 2, most)


def examples_for(effect: float, comps: Components, seeds: int, alpha: float = ALPHA, target: float = POWER,
                 most: int = 10_000_000) -> int | None:
    """Fewest test examples that detect `effect` with power `target` with `seeds` seeds (None: not within `most`;
    e.g. the seed term alone is too large)."""
    return _fewest(lambda n: power(effect, comps, seeds, n, alpha) >= target, 2, most)


def seeds_for_width(comps: Components, examples: int, width: float, confidence: float = 0.95,
                    most: int = 1000) -> int | None:
    """Fewest seeds (at least 2) whose crossed interval at `examples` test examples is at most `width` wide in
    the median (None: not within `most` seeds; the test-set term alone may be wider)."""
    return _fewest(lambda s: 2 * float(np.median(_simulated_half(comps, s, examples, confidence))) <= width, 2, most)
