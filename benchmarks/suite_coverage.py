"""Coverage of the mean-over-tasks intervals of a suite study (stats.tasks_interval / compare_tasks) on simulated
suites.

Each replicate draws T tasks from a population of tasks, and per task a crossed design (S seeds x N test examples,
correctness x_sj ~ Bernoulli(logistic(mu + tau_t + a_s + b_j)), tau_t the task's effect with sd `task_sd`). The
target is the population value: the mean accuracy over new tasks, seeds and examples (for a difference: arm a minus
arm b, where arm a gets `effect` plus a per-task deviation with sd `effect_sd` and each arm its own per-example
effect). Methods:
- `t-over-tasks`: Student t over the T per-task means (the one the reports and claims use);
- `within-tasks only`: the tasks taken as fixed — the per-task crossed variances summed, normal quantile; it
  answers "on exactly these tasks", not "on tasks like these", and is shown to say why it is not used.

    python benchmarks/suite_coverage.py [--reps 2000] [--out benchmarks/results/suite_coverage.md]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from tl_research import stats

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
WEIGHTS = WEIGHTS / WEIGHTS.sum()
SEED_SD, EXAMPLE_SD, ARM_SD = 0.3, 1.5, 0.8


def accuracy(mu: float, sd: float) -> float:
    """E[logistic(mu + sd Z)], Z ~ N(0, 1)."""
    return float(WEIGHTS @ (1.0 / (1.0 + np.exp(-(mu + sd * NODES)))))


@dataclass(frozen=True)
class Scenario:
    name: str
    mu: float
    task_sd: float
    difference: bool = False
    effect: float = 0.0  # arm a's logit shift (difference)
    effect_sd: float = 0.0  # its per-task deviation

    def truth(self) -> float:
        base = [self.task_sd, SEED_SD, EXAMPLE_SD] + ([ARM_SD] if self.difference else [])
        b = accuracy(self.mu, float(np.linalg.norm(base)))
        if not self.difference:
            return b
        return accuracy(self.mu + self.effect, float(np.linalg.norm(base + [self.effect_sd]))) - b


SCENARIOS = [Scenario("tasks differ a lot", 1.0, 1.0), Scenario("similar tasks", 1.0, 0.2),
             Scenario("difference, task-dependent effect", 1.0, 1.0, True, 0.4, 0.4),
             Scenario("difference, constant effect", 1.0, 1.0, True, 0.4, 0.0)]


def _task(sc: Scenario, rng: np.random.Generator, seeds: int, examples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One task's (seeds x examples) 0/1 matrix (two of them, paired, for a difference)."""
    tau = rng.normal(0, sc.task_sd)
    difficulty = rng.normal(0, EXAMPLE_SD, examples)

    def arm(shift: float) -> np.ndarray:
        own = rng.normal(0, ARM_SD, examples) if sc.difference else 0.0
        z = sc.mu + tau + shift + rng.normal(0, SEED_SD, (seeds, 1)) + difficulty + own
        return (rng.random((seeds, examples)) < 1.0 / (1.0 + np.exp(-z))).astype(float)

    if not sc.difference:
        return arm(0.0), None
    return arm(sc.effect + rng.normal(0, sc.effect_sd)), arm(0.0)


def _within_only(matrices: list[np.ndarray]) -> tuple[float, float]:
    """The fixed-tasks interval: each task's crossed variance, summed, over T^2; normal quantile."""
    means, variances = [], []
    for x in matrices:
        means.append(x.mean())
        variances.append(stats.components(x).variance(*x.shape))
    mean, se = float(np.mean(means)), float(np.sqrt(np.sum(variances))) / len(matrices)
    z = norm.ppf(0.975)
    return mean - z * se, mean + z * se


def simulate(sc: Scenario, tasks: int, seeds: int, examples: int, reps: int, rng: np.random.Generator
             ) -> dict[str, tuple[float, float]]:
    """Coverage and mean width of each method."""
    hits: dict[str, list[bool]] = {"t-over-tasks": [], "within-tasks only": []}
    widths: dict[str, list[float]] = {k: [] for k in hits}
    truth = sc.truth()
    for _ in range(reps):
        drawn = [_task(sc, rng, seeds, examples) for _ in range(tasks)]
        if sc.difference:
            interval = stats.compare_tasks([a.mean() for a, _ in drawn], [b.mean() for _, b in drawn]).interval
            fixed = _within_only([a - b for a, b in drawn])
        else:
            interval = stats.tasks_interval([a.mean() for a, _ in drawn])
            fixed = _within_only([a for a, _ in drawn])
        for name, (lo, hi) in (("t-over-tasks", (interval.low, interval.high)), ("within-tasks only", fixed)):
            hits[name].append(lo <= truth <= hi)
            widths[name].append(hi - lo)
    return {k: (float(np.mean(hits[k])), float(np.mean(widths[k]))) for k in hits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/suite_coverage.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    start = time.time()
    lines = ["# Coverage of the mean-over-tasks intervals (95 %)", "",
             f"`python benchmarks/suite_coverage.py --reps {args.reps}`: {args.reps} simulated suites per row, 3 seeds "
             f"x 500 test examples per task (seed sd {SEED_SD}, example sd {EXAMPLE_SD} on the logit scale; arms' "
             f"own per-example sd {ARM_SD}). Target: the value over the population of tasks. Coverage (mean width).",
             "", "| scenario | tasks | t-over-tasks | within-tasks only |", "|---|---|---|---|"]
    for sc in SCENARIOS:
        for tasks in (3, 5, 10, 19):
            found = simulate(sc, tasks, 3, 500, args.reps, rng)
            cells = [f"{cov:.3f} ({width:.3f})" for cov, width in found.values()]
            lines.append(f"| {sc.name} | {tasks} | " + " | ".join(cells) + " |")
    lines += ["", f"Ran in {time.time() - start:.0f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
