"""stats.py against scipy and hand-checked values."""

import itertools

import numpy as np
import pytest
from scipy import stats as sp

from tl_research import stats


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (480, 500), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ci = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_cell_interval_bootstrap_stays_in_unit_interval_and_covers_the_mean():
    for values, sizes in [([1.0, 1.0], [50, 50]), ([0.0, 0.02], [40, 40]), ([0.9, 0.7, 0.95], [200, 200, 200])]:
        iv = stats.cell_interval(values, sizes)
        assert 0.0 <= iv.low <= np.mean(values) <= iv.high <= 1.0 and iv.method == "bootstrap"
    one = stats.cell_interval([0.8], [500])
    assert one.method == "wilson" and (one.low, one.high) == pytest.approx(stats.wilson(400, 500))


def test_seed_bootstrap_agrees_with_scipy_bootstrap():
    values = [0.71, 0.74, 0.69, 0.77, 0.73, 0.70, 0.75, 0.72]
    ours = stats.cell_interval(values, None, resamples=20000)
    ref = sp.bootstrap((np.array(values),), np.mean, method="percentile", n_resamples=20000,
                       random_state=np.random.default_rng(1)).confidence_interval
    assert ours.method == "seeds-bootstrap"
    assert ours.low == pytest.approx(ref.low, abs=0.003) and ours.high == pytest.approx(ref.high, abs=0.003)


def test_example_resampling_widens_the_interval():
    values = [0.80, 0.81, 0.79]
    seeds_only = stats.cell_interval(values, None)
    with_examples = stats.cell_interval(values, [100, 100, 100])
    assert with_examples.width > seeds_only.width  # 100 test examples add their own uncertainty


def test_student_t_only_on_request_and_from_three_seeds():
    values = [0.6, 0.7, 0.8, 0.75]
    iv = stats.cell_interval(values, None, method="t")
    ref = sp.t.interval(0.95, 3, loc=np.mean(values), scale=sp.sem(values))
    assert (iv.low, iv.high) == pytest.approx(ref) and iv.method == "t"
    with pytest.raises(ValueError, match="at least 3 seeds"):
        stats.cell_interval([0.6, 0.7], None, method="t")


@pytest.mark.parametrize("d", [[0.02, 0.01], [0.03, -0.01, 0.02, 0.04, 0.01], [0.01] * 6,
                               [0.05, -0.02, 0.03, 0.01, -0.01, 0.04, 0.02]])
def test_sign_flip_p_is_the_exact_enumeration_and_scipy_permutation_test(d):
    observed = abs(np.mean(d))
    flips = [abs(np.mean(np.array(s) * d)) for s in itertools.product((1, -1), repeat=len(d))]
    exact = np.mean([f >= observed - 1e-12 for f in flips])
    assert stats.sign_flip_test(d) == pytest.approx(exact)
    a = np.array(d) + 0.5
    ref = sp.permutation_test((a, np.full(len(d), 0.5)), lambda x, y: np.mean(x - y), permutation_type="samples",
                              n_resamples=np.inf).pvalue
    assert stats.sign_flip_test(d) == pytest.approx(ref)


def test_small_n_cannot_reach_significance_and_says_so():
    assert stats.sign_flip_test([0.1, 0.2]) == 0.5 and stats.min_sign_flip_p(2) == 0.5
    comp = stats.compare([0.9, 0.91], [0.5, 0.52])
    assert comp.test == "sign-flip" and not comp.reachable and comp.p == 0.5
    assert stats.compare([0.9] * 6, [0.5] * 6).reachable  # 2 / 64 < 0.05


def test_wilcoxon_only_from_six_pairs():
    d = [0.02, 0.01, 0.03, -0.01, 0.04, 0.02]
    assert stats.wilcoxon(d) == pytest.approx(sp.wilcoxon(d).pvalue)
    with pytest.raises(ValueError, match="6 pairs"):
        stats.wilcoxon(d[:5])
    assert np.isnan(stats.compare([0.9, 0.8], [0.7, 0.6]).p_wilcoxon)


def test_mcnemar_on_a_constructed_pair():
    # 8 examples only a gets right, 2 only b: two-sided exact binomial = 2 * (1 + 10 + 45) / 1024
    assert stats.mcnemar(8, 2) == pytest.approx(112 / 1024)
    labels = np.array([0] * 20)
    pred_a = np.array([0] * 15 + [1] * 5)
    pred_b = np.array([0] * 7 + [1] * 8 + [0] * 2 + [1] * 3)
    table = stats.agreement_table(pred_a, pred_b, labels)
    assert table.tolist() == [[7, 8], [2, 3]]
    comp = stats.compare([0.75], [0.45], [table])
    assert comp.test == "mcnemar" and comp.p == pytest.approx(sp.binomtest(8, 10).pvalue)
    assert comp.diff == pytest.approx(0.30) and comp.interval.low < 0.30 < comp.interval.high


def test_holm_on_a_known_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.2, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.2) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_paired_difference_interval_from_tables_and_seeds():
    tables = [np.array([[80, 10], [2, 8]]), np.array([[78, 12], [3, 7]])]
    diff, iv = stats.paired_difference([0.90, 0.90], [0.82, 0.81], tables)
    assert diff == pytest.approx(0.085) and iv.method == "bootstrap" and iv.low < diff < iv.high and iv.low > 0


def test_seeds_needed_grows_with_variance():
    assert stats.seeds_needed(0.02, 0.02) == 16  # (2 * 1.96 * 0.02 / 0.02)^2 = 15.4
    assert stats.seeds_needed(0.0, 0.02) == 1


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
