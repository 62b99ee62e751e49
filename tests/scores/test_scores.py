"""Transferability scores on constructed features where the answer is known, and LogME against a direct
computation with explicit matrices."""

import numpy as np
import pytest

from tl_research.scores.h_score import h_score
from tl_research.scores.knn import knn_accuracy
from tl_research.scores.leep import leep
from tl_research.scores.logme import logme
from tl_research.scores.nce import nce
from tl_research.scores.probe import probe_accuracy


def clusters(n_per=40, classes=4, dim=16, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    y = np.repeat(np.arange(classes), n_per)
    return centres[y] + rng.normal(0, spread, (len(y), dim)), y


def logme_reference(f, y_all):
    """LogME with explicit matrices: A = αI + βFᵀF, m = βA⁻¹Fᵀy, log|A| by slogdet, the paper's updates."""
    n, d = f.shape
    out = []
    for c in np.unique(y_all):
        y = (y_all == c).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            lam = alpha / beta
            a = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a, f.T @ y)
            gamma = np.sum(beta * np.linalg.eigvalsh(f.T @ f) / (alpha + beta * np.linalg.eigvalsh(f.T @ f)))
            alpha_de, beta_de = m @ m, np.sum((y - f @ m) ** 2)
            alpha, beta = gamma / (alpha_de + 1e-5), (n - gamma) / (beta_de + 1e-5)
            if abs(alpha / beta - lam) / lam < 0.01:
                break
        a = alpha * np.eye(d) + beta * f.T @ f
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.linalg.slogdet(a)[1]
                    - beta / 2 * (beta_de + 1e-5) - alpha / 2 * (alpha_de + 1e-5) - n / 2 * np.log(2 * np.pi))
        out.append(evidence / n)
    return float(np.mean(out))


def test_logme_matches_a_direct_computation():
    f, y = clusters(seed=3, spread=1.5)
    assert logme(f, y) == pytest.approx(logme_reference(f, y), abs=1e-6)
    wide = np.random.default_rng(1).normal(size=(30, 50))  # more features than samples
    labels = np.arange(30) % 3
    assert logme(wide, labels) == pytest.approx(logme_reference(wide, labels), abs=1e-6)


@pytest.mark.parametrize("score", [logme, h_score, knn_accuracy])
def test_separable_features_beat_random_ones(score):
    f, y = clusters()
    noise = np.random.default_rng(5).normal(0, 3, f.shape)
    assert score(f, y) > score(noise, y)


def test_invariances():
    f, y = clusters(spread=1.0)
    perm = np.random.default_rng(0).permutation(f.shape[1])
    for score in (logme, h_score, knn_accuracy):
        assert score(f[:, perm], y) == pytest.approx(score(f, y), rel=1e-9), score.__name__
    mixing = np.random.default_rng(1).normal(size=(16, 16))  # invertible linear map: H-score does not change
    assert h_score(f @ mixing, y, shrinkage=False) == pytest.approx(h_score(f, y, shrinkage=False), rel=1e-6)
    assert h_score(3.0 * f, y) == pytest.approx(h_score(f, y), rel=1e-6)  # shrinkage keeps scale invariance
    assert knn_accuracy(7.0 * f, y) == knn_accuracy(f, y)  # cosine kNN ignores a global scale


def test_leep_and_nce_bounds():
    """LEEP <= 0; = NCE for hard predictions; = -H(Y) for a constant source (Nguyen et al. 2020, Sec. 3)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    theta = rng.dirichlet(np.ones(6), 300)
    theta[np.arange(300), y * 2] += 2.0  # source class 2y predicts target y
    theta /= theta.sum(1, keepdims=True)
    z = theta.argmax(1)
    assert leep(theta, y) <= 0 and nce(z, y) <= 0
    # an informative source beats the label-marginal baseline -H(Y) that any constant predictor gets
    marginal = np.bincount(y) / len(y)
    assert leep(theta, y) > float(np.sum(marginal * np.log(marginal)))
    onehot = np.eye(6)[z]
    assert leep(onehot, y) == pytest.approx(nce(z, y))  # with hard predictions LEEP is NCE
    assert leep(theta[:, ::-1], y) == pytest.approx(leep(theta, y))  # source class order is irrelevant
    assert nce(y * 3 + 1, y) == pytest.approx(0.0)  # Y determined by Z
    independent = np.tile(np.arange(4), 100)
    assert nce(np.repeat(np.arange(4), 100), independent) == pytest.approx(-np.log(4))
    assert leep(np.tile(rng.dirichlet(np.ones(5)), (400, 1)), independent) == pytest.approx(-np.log(4))


def test_probe_accuracy_is_the_converged_probe():
    f, y = clusters(n_per=30)
    idx = np.arange(len(y))
    assert probe_accuracy(f[idx % 2 == 0], y[idx % 2 == 0], f[idx % 2 == 1], y[idx % 2 == 1]) == 1.0
    noise = np.random.default_rng(2).normal(size=f.shape)
    assert probe_accuracy(noise[idx % 2 == 0], y[idx % 2 == 0], noise[idx % 2 == 1], y[idx % 2 == 1]) < 0.6


def test_shrunk_h_score_does_not_saturate_with_more_features_than_examples():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    noise = rng.normal(size=(60, 200))
    assert h_score(noise, y, shrinkage=False) == pytest.approx(2.0, abs=1e-6)  # classes - 1, whatever the features
    assert abs(h_score(noise, y) - 2.0) > 0.1
    f, y2 = clusters(n_per=200, classes=3, dim=8, spread=1.0)  # many examples per dimension: little shrinkage
    assert h_score(f, y2) == pytest.approx(h_score(f, y2, shrinkage=False), rel=0.05)


def test_agreement_measures_on_known_orderings():
    """tau, weighted tau and top-1 regret where the answer is known, and intervals that contain the point."""
    from scipy.stats import kendalltau

    from tl_research.scores.agreement import agreement

    truth = np.array([0.61, 0.70, 0.74, 0.80, 0.86, 0.90])
    same = agreement(truth * 10 - 3, truth)
    assert same.tau == pytest.approx(1.0) and same.wtau == pytest.approx(1.0) and same.regret == 0.0
    reverse = agreement(-truth, truth)
    assert reverse.tau == pytest.approx(-1.0) and reverse.regret == pytest.approx(0.90 - 0.61)
    swapped = np.array([1, 2, 3, 4, 6, 5])  # the best two swapped: one discordant pair of 15
    got = agreement(swapped, truth)
    assert got.tau == pytest.approx(1 - 2 / 15) == pytest.approx(kendalltau(swapped, truth).statistic)
    assert got.regret == pytest.approx(0.04)
    assert got.wtau < 1 - 2 / 15 + 1e-9  # a swap at the top costs weighted tau at least as much
    lo, hi = got.tau_ci
    assert lo <= got.tau <= hi and -1 <= lo and hi <= 1
    tied = agreement(np.array([1, 2, 3, 4, 6, 6]), truth)  # the top two tied: the mean of what they reach
    assert tied.regret == pytest.approx(0.90 - (0.86 + 0.90) / 2)
    nan = agreement(np.array([1, np.nan, 3, 4, 6, 5]), truth)
    assert nan.n == 5
    with pytest.raises(ValueError, match="at least 3"):
        agreement(np.array([1.0, 2.0]), np.array([0.5, 0.6]))
