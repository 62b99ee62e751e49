"""stats.py against scipy and hand-checked values."""

import numpy as np
import pytest
from scipy import stats as sp

from tl_research import stats


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (480, 500), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ci = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_seeds_interval_is_student_t_over_seeds_and_wilson_at_one_seed():
    values = [0.81, 0.84, 0.79, 0.83]
    iv = stats.seeds_interval(values)
    ref = sp.t.interval(0.95, 3, loc=np.mean(values), scale=sp.sem(values))
    assert (iv.low, iv.high) == pytest.approx(ref) and iv.method == "seeds-t"
    one = stats.seeds_interval([0.8], size=500)
    assert (one.low, one.high) == pytest.approx(stats.wilson(400, 500)) and one.method == "wilson-one-seed"
    assert stats.seeds_interval([0.8]).method == "none"


def test_compare_seeds_is_the_paired_t_test():
    a, b = [0.90, 0.88, 0.91, 0.87, 0.92], [0.85, 0.86, 0.84, 0.86, 0.85]
    comp = stats.compare_seeds(a, b)
    ref = sp.ttest_rel(a, b)
    assert comp.p == pytest.approx(ref.pvalue) and comp.test == "seeds-t" and comp.n == 5
    ci = ref.confidence_interval(0.95)
    assert (comp.interval.low, comp.interval.high) == pytest.approx((ci.low, ci.high))
    one = stats.compare_seeds([0.9], [0.8])
    assert one.interval.method == "none" and np.isnan(one.p) and stats.side(one.interval) == 0


def test_compare_matrices_p_agrees_with_its_interval_at_every_level():
    """The one decision rule: the t test's p is below 1 - confidence exactly when that interval excludes 0."""
    rng = np.random.default_rng(3)
    hard = rng.random(300)
    for shift in np.linspace(0.0, 0.08, 9):
        a = (rng.random((5, 300)) < 0.7 + 0.2 * (hard - 0.5) + shift).astype(int)
        b = (rng.random((5, 300)) < 0.7 + 0.2 * (hard - 0.5)).astype(int)
        for confidence in (0.95, stats.bonferroni(6)):
            comp = stats.compare_matrices(a, b, confidence)
            assert comp.test == "crossed-t" and comp.diff == pytest.approx(a.mean() - b.mean())
            assert (comp.p < 1 - confidence) == (stats.side(comp.interval) != 0), (shift, confidence, comp)
    one = stats.compare_matrices(a[:1], b[:1])
    d = a[0] - b[0]
    assert one.test == "paired-t-one-seed" and one.p == pytest.approx(sp.ttest_1samp(d, 0).pvalue)


def test_family_level_and_adjusted_p():
    assert stats.bonferroni(1) == 0.95 and stats.bonferroni(5) == pytest.approx(0.99)
    assert stats.adjusted(0.004, 5) == pytest.approx(0.02) and stats.adjusted(0.3, 5) == 1.0
    assert np.isnan(stats.adjusted(float("nan"), 5))


def test_side_is_the_decision_rule():
    assert stats.side(stats.Interval(0.01, 0.05, "crossed-t")) == 1
    assert stats.side(stats.Interval(-0.05, -0.01, "crossed-t")) == -1
    assert stats.side(stats.Interval(-0.01, 0.05, "crossed-t")) == 0
    assert stats.side(stats.Interval(-0.01, 0.05, "crossed-t"), margin=-0.02) == 1


def test_components_recover_a_simulated_crossed_design():
    """x = seed effect + example effect + noise with known variances: the moment estimates find them."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (200, 1)) + rng.normal(0, 0.3, (1, 2000)) + rng.normal(0, 0.2, (200, 2000))
    c = stats.components(x)
    assert c.seed == pytest.approx(0.01, rel=0.3) and c.example == pytest.approx(0.09, rel=0.1)
    assert c.residual == pytest.approx(0.04, rel=0.05)


def test_seeds_and_examples_for_a_target_power_give_that_power():
    comps = stats.Components(seed=0.0004, example=0.05, residual=0.12)
    effect, level = 0.02, 1 - stats.bonferroni(4)  # alpha / 4: one of 4 claims
    seeds = stats.seeds_for(effect, comps, 5000, level)
    assert seeds is not None
    assert stats.power(effect, comps, seeds, 5000, level) >= 0.8 > stats.power(effect, comps, seeds - 1, 5000, level)
    # at 500 test examples the example term alone is too large: no number of seeds is enough; nor, with 10 seeds,
    # any number of test examples
    assert stats.seeds_for(effect, comps, 500, level) is None
    assert stats.examples_for(effect, comps, 10, level) is None
    examples = stats.examples_for(effect, comps, 40, level)
    assert stats.power(effect, comps, 40, examples, level) >= 0.8 > stats.power(effect, comps, 40, examples - 1,
                                                                                 level)


def test_power_matches_a_simulation_of_the_crossed_interval():
    """The plan's power formula against the rejection rate of `compare_matrices` on simulated designs."""
    rng = np.random.default_rng(11)
    seeds, examples, effect = 5, 400, 0.03
    comps = stats.Components(seed=0.0003, example=0.0, residual=0.2)
    hits = []
    for _ in range(400):
        d = effect + rng.normal(0, comps.seed ** 0.5, (seeds, 1)) + rng.normal(0, comps.residual ** 0.5,
                                                                             (seeds, examples))
        hits.append(stats.side(stats.compare_matrices(d, np.zeros_like(d)).interval) > 0)
    assert np.mean(hits) == pytest.approx(stats.power(effect, comps, seeds, examples), abs=0.08)


def test_seeds_for_width():
    comps = stats.Components(0.0001, 0.0, 0.0)  # seed variance only
    seeds = stats.seeds_for_width(comps, 1, 0.02)
    # seed variance only: the t interval over seeds, at the median of its sample variance (simulated: 2 % slack)
    half = lambda s: sp.t.ppf(0.975, s - 1) * (0.0001 * sp.chi2.median(s - 1) / (s - 1) / s) ** 0.5  # noqa: E731
    assert 2 * half(seeds) <= 0.02 * 1.02 and 2 * half(seeds - 1) > 0.02 * 0.98
    assert stats.seeds_for_width(stats.Components(0.0, 0.01, 0.0), 100, 0.02, most=50) is None  # test set too small


def test_accuracy_interval_on_identical_seeds_is_the_examples_t_interval():
    """When every seed predicts the same, only the test set varies: the crossed interval reduces to the t interval
    over the examples (seed and interaction terms are zero), whatever the number of seeds."""
    from scipy import stats as st

    row = (np.random.default_rng(0).random(300) < 0.8).astype(float)
    for seeds in (2, 5, 10):
        iv = stats.accuracy_interval(np.tile(row, (seeds, 1)))
        half = st.t.ppf(0.975, len(row) - 1) * row.std(ddof=1) / np.sqrt(len(row))
        assert (iv.low, iv.high) == pytest.approx((row.mean() - half, row.mean() + half), rel=1e-9)
    same = stats.difference_interval(np.tile(row, (3, 1)), np.tile(row, (3, 1)))
    assert same[0] == 0 and same[1].width == pytest.approx(0.0, abs=1e-12)


def test_accuracy_interval_grows_with_seed_variance_the_old_one_ignores():
    """Seeds that disagree widen the crossed interval; the example term stays however many seeds there are."""
    rng = np.random.default_rng(1)
    hard = rng.random(400) < 0.7
    calm = np.array([hard ^ (rng.random(400) < 0.02) for _ in range(5)], dtype=float)
    shaky = np.array([hard ^ (rng.random(400) < p) for p in (0.02, 0.1, 0.2, 0.3, 0.4)], dtype=float)
    assert stats.accuracy_interval(shaky).width > 1.5 * stats.accuracy_interval(calm).width
    many = np.array([hard ^ (rng.random(400) < 0.02) for _ in range(40)], dtype=float)
    # 8x the seeds: the test-set part of the uncertainty does not shrink
    assert stats.accuracy_interval(many).width > 0.8 * stats.accuracy_interval(calm).width


@pytest.mark.parametrize("name", ["difficulty", "seed-dominated", "identical-seeds", "difference"])
def test_crossed_intervals_keep_their_coverage_at_five_seeds(name):
    """The reduced coverage suite (benchmarks/coverage.py has the full one): 500 replicates of 5 seeds x 200 test
    examples; the 95 % interval must cover the population value at least 91 % of the time (at 95 % true coverage,
    91 % is 4 standard errors away: not noise)."""
    import runpy

    bench = runpy.run_path("benchmarks/coverage.py")
    scenario = next(s for s in bench["SCENARIOS"] if s.name == name)
    result = bench["simulate"](scenario, seeds=5, examples=200, reps=500, seed=7)["crossed-t"]
    assert result["coverage"] >= 0.91, result


def test_at_chance_needs_both_chance_accuracy_and_no_learning():
    # 12 of 100 right on 10 classes: the Wilson interval reaches 0.1; the loss stayed where it started
    assert stats.at_chance(0.12, 100, 10, first_loss=2.30, last_loss=2.29)
    assert not stats.at_chance(0.12, 100, 10, first_loss=2.30, last_loss=1.50)  # it learned something: not flagged
    assert not stats.at_chance(0.30, 100, 10, first_loss=2.30, last_loss=2.40)  # clearly above chance
    # the same accuracy on more examples is distinguishable from chance
    low = sp.binomtest(120, 1000).proportion_ci(method="wilson").low
    assert stats.at_chance(0.12, 1000, 10, 2.3, 2.3) == (low <= 0.1)
    assert not stats.at_chance(0.5, 10, 2, None, 0.7)  # no training loss (a solved probe): nothing to judge


def test_the_family_level_coverage_worlds_know_their_truth():
    """benchmarks/coverage_levels.py's own worlds: without a shared part or collapses, a world's Monte-Carlo
    population difference is coverage.py's closed form (Gauss-Hermite quadrature); the interval it checks at a level
    is compare_matrices' at that level."""
    import runpy
    import sys

    sys.path.insert(0, "benchmarks")  # the script imports coverage.py beside it
    try:
        bench = runpy.run_path("benchmarks/coverage_levels.py")
    finally:
        sys.path.remove("benchmarks")
    plain = bench["World"]("plain", mu=1.3, mu_b=1.0, seed_sd=0.3, example_sd=1.2, arm_sd=0.8)
    closed = next(s for s in bench["SCENARIOS"] if s.name == "difference").truth()
    assert plain.truth(np.random.default_rng(0), draws=2_000_000) == pytest.approx(closed, abs=1.5e-3)
    x, y = plain.draw(5, 300, np.random.default_rng(1))
    mean, var, dof = stats.crossed_moments(x - y)
    half = sp.t.ppf(1 - 0.05 / 20, dof) * np.sqrt(var)
    iv = stats.compare_matrices(x, y, confidence=1 - 0.05 / 10).interval
    assert (iv.low, iv.high) == pytest.approx((mean - half, mean + half))
