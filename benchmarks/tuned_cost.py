"""The cost of a fair comparison: a tuned study (every arm tuned on validation, then its best setting re-run with
seeds) against the plain grid it replaces (every arm at one shared setting, with the same seeds), measured in one
run on the same machine.

Both studies are experiments/studies/mnv2_tuned.yaml's arms on the offline MobileNetV2 weights and Animal-MNIST,
reduced to fit a CPU (`--trials` tuning trials per arm, `--seeds` seeds, 256 training images at 32 px, 2 epochs).
The grid runs first, then the tuned study, whose wall time is split by phase from its trials' start / end times.
Reported as ratios (these machines are noisy: only ratios measured side by side mean anything). Run:

    python benchmarks/tuned_cost.py [--trials 4] [--seeds 3] [--out benchmarks/results/tuned_cost.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tl_research.studies.study import run_study
from tl_research.studies.studyspec import StudyConfig, build_spec, load_study

YAML = "experiments/studies/mnv2_tuned.yaml"
LR = {"type": "float", "low": 1.0e-5, "high": 1.0e-1, "log": True}


def phase_seconds(study, phase: str) -> float:
    trials = [t for t in study.get_trials() if t.user_attrs.get("phase") == phase and t.datetime_complete]
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/tuned_cost.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sets = [f"output_dir={scratch}/runs", "tracking.mode=disabled", "data.train_limit=256", "data.eval_limit=128",
                "data.image_size=32", "trainer.max_epochs=2"]
        tune = {"params": {"optim.lr": LR, "freeze.ft_lr": LR, "freeze.decay": {"type": "float", "low": 0.5,
                                                                                 "high": 1.0}},
                "trials": args.trials}
        spec = load_study(YAML, sets, {"seeds": args.seeds, "tune": tune, "pruner": "none"})
        # the grid it replaces: the same arms and seeds at the base experiment's one setting (first: quick)
        grid = build_spec("mnv2-grid", spec.base, StudyConfig(name="mnv2-grid", kind="grid", seeds=args.seeds,
                                                              grid=dict(spec.config.arms)))
        t0 = time.perf_counter()
        run_study(grid, f"sqlite:///{scratch}/grid.db")
        grid_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        study = run_study(spec, f"sqlite:///{scratch}/tuned.db")
        tuned_wall = time.perf_counter() - t0
    tune_s, seed_s = phase_seconds(study, "tune"), phase_seconds(study, "seed")
    arms = len(spec.arms)
    lines = ["# The cost of a tuned study against the plain grid it replaces", "",
             f"Command: `python benchmarks/tuned_cost.py --trials {args.trials} --seeds {args.seeds}` (both studies "
             f"in one run, one after the other, on the same machine). {arms} arms (full, lp_ft, llrd) of "
             f"MobileNetV2 on Animal-MNIST, 256 training images at 32 px, 2 epochs.", "",
             "| | runs | wall time (s) | ratio to the grid |", "|---|---|---|---|",
             f"| plain grid (one shared setting) | {arms * args.seeds} | {grid_wall:.0f} | 1.00 |",
             f"| tuned study: tuning phase | {arms * args.trials} | {tune_s:.0f} | {tune_s / grid_wall:.2f} |",
             f"| tuned study: seed phase | {arms * args.seeds} | {seed_s:.0f} | {seed_s / grid_wall:.2f} |",
             f"| tuned study, in all | {arms * (args.trials + args.seeds)} | {tuned_wall:.0f} "
             f"| {tuned_wall / grid_wall:.2f} |", "",
             "Run times differ with the setting each trial draws (epochs are fixed; a pruner would cut bad tuning "
             "trials short, off here); tuning trials skip the test split."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
