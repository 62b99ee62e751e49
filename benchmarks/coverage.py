"""Coverage of the accuracy and difference intervals on simulated crossed designs (seeds x one shared test set).

Every seed scores the same test examples, so an example that is hard is hard for every seed. Each scenario draws,
per replicate, new seeds and a new test set from a population and records whether the 95 % interval covers the
population value (the accuracy over new seeds and new test examples), and the interval's width against the width
of the estimator's true sampling distribution (its 2.5-97.5 % quantile range over the replicates).

Correctness follows a logistic crossed model: x_sj ~ Bernoulli(logistic(mu + a_s + b_j)), a_s the seed effect
(sd `seed_sd`), b_j the example's difficulty (sd `example_sd`), shared across seeds. Scenarios (the issue's list):
- difficulty: per-example difficulty dominates, seeds vary a little;
- seed-dominated: seeds vary a lot, examples a little;
- identical-seeds: every seed predicts the same (x_sj = x_j), only the test set varies;
- difference: two arms on the same seeds and examples, sharing the difficulty b_j, each with its own per-example
  effect (sd 0.8) and seed effect; the interval is for acc_a - acc_b.

Methods: `crossed-t` (stats.accuracy_interval / difference_interval) and `old bootstrap` (the hierarchical
bootstrap the tables used before, kept here as the reference: it resamples each seed's examples independently, as
if every seed had its own test set). Run:

    python benchmarks/coverage.py [--reps 1000] [--out benchmarks/results/coverage.md]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl_research import stats

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # E[f(Z)], Z ~ N(0, 1), by Gauss-Hermite quadrature
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def population_accuracy(mu: float, sd: float) -> float:
    """E[logistic(mu + sd Z)]: the accuracy over the population of seeds and examples."""
    return float(WEIGHTS @ logistic(mu + sd * NODES))


@dataclass(frozen=True)
class Scenario:
    name: str
    mu: float
    seed_sd: float
    example_sd: float
    identical_seeds: bool = False
    difference: bool = False  # two arms: b has mu_b, its own per-example effect and seed effect
    mu_b: float = 0.0
    arm_sd: float = 0.8  # each arm's own per-example effect (difference scenario)

    def truth(self) -> float:
        if not self.difference:
            return population_accuracy(self.mu, float(np.hypot(self.seed_sd, self.example_sd)))
        sd = float(np.sqrt(self.seed_sd ** 2 + self.example_sd ** 2 + self.arm_sd ** 2))
        return population_accuracy(self.mu, sd) - population_accuracy(self.mu_b, sd)

    def draw(self, seeds: int, examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """One replicate: the (seeds, examples) 0/1 matrix (and arm b's, for a difference)."""
        b = rng.normal(0, self.example_sd, examples)
        if self.identical_seeds:
            row = rng.random(examples) < logistic(self.mu + b)
            return np.tile(row, (seeds, 1)).astype(float), None
        if not self.difference:
            a = rng.normal(0, self.seed_sd, (seeds, 1))
            return (rng.random((seeds, examples)) < logistic(self.mu + a + b)).astype(float), None
        arms = []
        for mu in (self.mu, self.mu_b):
            own = rng.normal(0, self.arm_sd, examples)
            a = rng.normal(0, self.seed_sd, (seeds, 1))
            arms.append((rng.random((seeds, examples)) < logistic(mu + a + b + own)).astype(float))
        return arms[0], arms[1]


SCENARIOS = [
    Scenario("difficulty", mu=1.5, seed_sd=0.1, example_sd=1.5),
    Scenario("seed-dominated", mu=1.0, seed_sd=0.6, example_sd=0.3),
    Scenario("identical-seeds", mu=1.2, seed_sd=0.0, example_sd=1.2, identical_seeds=True),
    Scenario("difference", mu=1.3, mu_b=1.0, seed_sd=0.3, example_sd=1.2, difference=True),
]


def old_bootstrap(per_seed: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """The former tables' interval: seeds resampled with replacement, then the examples of each chosen seed by
    draws of its own counts. `per_seed`: (seeds, 2) right/wrong counts (a cell: a binomial draw per chosen seed, as
    `cell_interval` did), or (seeds, 4) [only a right, only b right, both right, both wrong] counts (a difference:
    one multinomial draw per seed shared by its repeats, as `paired_difference` did)."""
    n, total = per_seed.shape[0], per_seed.sum(1)
    pick = rng.integers(0, n, size=(resamples, n))
    if per_seed.shape[1] == 2:
        stat = rng.binomial(total[pick].astype(int), (per_seed[:, 0] / total)[pick]) / total[pick]
    else:
        draws = np.stack([rng.multinomial(int(total[s]), per_seed[s] / total[s], size=resamples) for s in range(n)],
                         1)
        stat = np.take_along_axis((draws[..., 0] - draws[..., 1]) / total, pick, 1)
    lo, hi = np.quantile(stat.mean(1), [0.025, 0.975])
    return float(lo), float(hi)


def intervals(scenario: Scenario, x: np.ndarray, y: np.ndarray | None, old: bool, rng: np.random.Generator,
              ) -> dict[str, tuple[float, float]]:
    """Each method's interval on one replicate."""
    out = {}
    if scenario.difference:
        _, iv = stats.difference_interval(x, y)
        out["crossed-t"] = (iv.low, iv.high)
        if old:  # per seed: only a right, only b right, both right, both wrong
            counts = np.stack([(x * (1 - y)).sum(1), ((1 - x) * y).sum(1), (x * y).sum(1),
                               ((1 - x) * (1 - y)).sum(1)], 1)
            out["old bootstrap"] = old_bootstrap(counts, 1000, rng)
        return out
    iv = stats.accuracy_interval(x)
    out["crossed-t"] = (iv.low, iv.high)
    if old:  # per seed: right, wrong
        out["old bootstrap"] = old_bootstrap(np.stack([x.sum(1), (1 - x).sum(1)], 1), 1000, rng)
    return out


def simulate(scenario: Scenario, seeds: int, examples: int, reps: int, old: bool = False,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Coverage, mean width and width / true sampling width of every method over `reps` replicates."""
    rng = np.random.default_rng(seed)
    truth = scenario.truth()
    estimates, found = [], {}
    for _ in range(reps):
        x, y = scenario.draw(seeds, examples, rng)
        estimates.append(float(x.mean() - (y.mean() if y is not None else 0.0)))
        for method, (lo, hi) in intervals(scenario, x, y, old, rng).items():
            found.setdefault(method, []).append((lo <= truth <= hi, hi - lo))
    spread = float(np.subtract(*np.quantile(estimates, [0.975, 0.025])))
    return {m: {"coverage": float(np.mean([c for c, _ in v])), "width": float(np.mean([w for _, w in v])),
                "ratio": float(np.mean([w for _, w in v])) / spread if spread > 0 else float("nan")}
            for m, v in found.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/results/coverage.md")
    args = p.parse_args()
    t0 = time.perf_counter()
    lines = ["# Interval coverage on crossed designs (seeds x one shared test set)", "",
             f"Command: `python benchmarks/coverage.py --reps {args.reps}`. Each row: {args.reps} replicates, each "
             "with new seeds and a new test set drawn from the scenario's population; coverage of the population "
             "value by the nominal 95 % interval, its mean width, and that width over the width of the estimator's "
             "true sampling distribution (its 2.5-97.5 % range over the replicates; 1.0 = as narrow as the data "
             "allow). Goal: coverage >= 0.93 from 5 seeds on, width ratio <= 1.5. Scenarios and methods: see the "
             "script's docstring.", "",
             "| scenario | seeds | test size | truth | crossed-t coverage | crossed-t width (ratio) "
             "| old bootstrap coverage | old bootstrap width (ratio) |", "|---|---|---|---|---|---|---|---|"]
    for scenario in SCENARIOS:
        for seeds in (3, 5, 10, 20):
            for examples in (100, 500, 2000):
                r = simulate(scenario, seeds, examples, args.reps, old=True)
                new, old = r["crossed-t"], r["old bootstrap"]
                lines.append(f"| {scenario.name} | {seeds} | {examples} | {scenario.truth():.3f} "
                             f"| {new['coverage']:.3f} | {new['width']:.3f} ({new['ratio']:.2f}) "
                             f"| {old['coverage']:.3f} | {old['width']:.3f} ({old['ratio']:.2f}) |")
                print(lines[-1], flush=True)
    lines += ["", f"Total time: {time.perf_counter() - t0:.0f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
