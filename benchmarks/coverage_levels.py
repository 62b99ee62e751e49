"""Non-coverage of the crossed interval at the family levels claims are judged at (1 - 0.05 / k, Bonferroni).

benchmarks/coverage.py checks the nominal 95 % level. Claims and tables use simultaneous intervals at 1 - alpha/k,
where the t quantile is steep in its degrees of freedom, so coverage there is checked on its own: per world, seeds S
and family size k, the share of replicates whose interval misses the population value, over the nominal alpha/k
(1.00 = as stated; the target is <= 1.25), with its Monte-Carlo standard error, and which side it misses on. The
intervals are stats.accuracy_interval's / compare_matrices' own (`stats.crossed_moments` gives the mean, variance and
degrees of freedom they use; the quantile is taken at every level from those).

Worlds (logistic crossed model as in coverage.py; N = 500 test examples shared by every seed):
- difficulty, seed-dominated, difference: coverage.py's;
- collapsed-seed: a difference where arm a's training collapses on one seed in ten (its seed effect -3);
- shared-support: a difference whose arms share most of their seed effect (each seed's support set helps or hurts
  both arms alike: correlation 0.8);
- near-deterministic: a difference of two arms that agree on almost every example (per-example effects sd 0.2,
  seed effects sd 0.05).

    python benchmarks/coverage_levels.py [--reps 20000] [--out benchmarks/results/coverage_levels.md]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from coverage import SCENARIOS, Scenario, logistic
from scipy import stats as sp

from tl_research import stats

LEVELS = (1, 5, 10, 20)
SEEDS = (3, 5, 8, 12)
EXAMPLES = 500


@dataclass(frozen=True)
class World:
    """A difference world beyond coverage.py's: seed effects per arm with a shared part and a collapse chance."""

    name: str
    mu: float
    mu_b: float
    seed_sd: float
    example_sd: float
    arm_sd: float
    shared: float = 0.0  # correlation of the two arms' seed effects
    collapse: float = 0.0  # chance that arm a's seed collapses (seed effect -3)

    def _seed_effects(self, seeds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        common = rng.normal(0, 1, (seeds, 1))
        own = rng.normal(0, 1, (2, seeds, 1))
        a, b = (self.seed_sd * (np.sqrt(self.shared) * common + np.sqrt(1 - self.shared) * o) for o in own)
        return np.where(rng.random((seeds, 1)) < self.collapse, -3.0, a), b

    def draw(self, seeds: int, examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        difficulty = rng.normal(0, self.example_sd, examples)
        effects = self._seed_effects(seeds, rng)
        return tuple((rng.random((seeds, examples)) < logistic(mu + s + difficulty + rng.normal(0, self.arm_sd,
                                                                                             examples))).astype(float)
                     for mu, s in zip((self.mu, self.mu_b), effects))

    def truth(self, rng: np.random.Generator, draws: int = 400_000) -> float:
        """The population difference, by Monte Carlo over seeds and examples (the collapse has no closed form)."""
        a, b = self._seed_effects(draws, rng)
        d = rng.normal(0, self.example_sd, (draws, 1))
        own = rng.normal(0, self.arm_sd, (draws, 2))
        return float(np.mean(logistic(self.mu + a + d + own[:, :1]) - logistic(self.mu_b + b + d + own[:, 1:])))


WORLDS: list[Scenario | World] = [s for s in SCENARIOS if not s.identical_seeds] + [
    World("collapsed-seed", mu=1.3, mu_b=1.0, seed_sd=0.3, example_sd=1.2, arm_sd=0.8, collapse=0.1),
    World("shared-support", mu=1.3, mu_b=1.0, seed_sd=0.5, example_sd=1.2, arm_sd=0.8, shared=0.8),
    World("near-deterministic", mu=2.0, mu_b=1.9, seed_sd=0.05, example_sd=2.0, arm_sd=0.2),
]


def misses(world: Scenario | World, seeds: int, reps: int, rng: np.random.Generator) -> dict[int, tuple[float, float]]:
    """Per family size k: the share of replicates whose interval lies wholly above / wholly below the truth."""
    truth = world.truth() if isinstance(world, Scenario) else world.truth(rng)
    moments = []
    for _ in range(reps):
        x, y = world.draw(seeds, EXAMPLES, rng)
        moments.append(stats.crossed_moments(x if y is None else x - y))
    mean, var, dof = (np.array(v) for v in zip(*moments))
    out = {}
    for k in LEVELS:
        half = sp.t.ppf(1 - stats.ALPHA / (2 * k), dof) * np.sqrt(var)
        out[k] = (float(np.mean(mean - half > truth)), float(np.mean(mean + half < truth)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=20000)
    p.add_argument("--out", default="benchmarks/results/coverage_levels.md")
    args = p.parse_args()
    t0, rng = time.perf_counter(), np.random.default_rng(0)
    lines = ["# Non-coverage of the crossed interval at family levels 1 - 0.05/k", "",
             f"Command: `python benchmarks/coverage_levels.py --reps {args.reps}`. Each cell: observed non-coverage "
             f"over nominal 0.05/k ({args.reps} replicates of {EXAMPLES} shared test examples; ± its Monte-Carlo "
             "standard error), and in brackets the share of the misses where the interval lies above the truth. "
             "Target: <= 1.25 at every k. Worlds: see the script's docstring.", "",
             "| world | seeds | " + " | ".join(f"k = {k}" for k in LEVELS) + " |",
             "|---|---|" + "---|" * len(LEVELS)]
    for world in WORLDS:
        for seeds in SEEDS:
            found = misses(world, seeds, args.reps, rng)
            cells = []
            for k in LEVELS:
                above, below = found[k]
                nominal = stats.ALPHA / k
                se = np.sqrt(nominal * (1 - nominal) / args.reps) / nominal
                share = above / (above + below) if above + below > 0 else float("nan")
                cells.append(f"{(above + below) / nominal:.2f} ± {se:.2f} ({share:.0%})")
            lines.append(f"| {world.name} | {seeds} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines += ["", f"Total time: {time.perf_counter() - t0:.0f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
