"""Run experiment YAMLs one after another and write a markdown table of test accuracy, trainable share,
training throughput and wall time (one seed; studies with repeats come from `tlr study`).

    python benchmarks/strategy_table.py experiments/mobilenetv2_animal_*.yaml --out benchmarks/results/x.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from tl_research.config import load_experiment
from tl_research.pipeline import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("configs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", default=[], help="override applied to every config")
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.configs:
            exp = load_experiment(path, [f"output_dir={tmp}", "trainer.progress_bar=false", *args.set])
            t0 = time.perf_counter()
            m = run(exp).metrics
            rows.append((Path(path).stem, exp.freeze.strategy, m["test/acc"], m["test/f1_macro"],
                         m["freeze/trainable_fraction"], m["params/trainable"],
                         m["throughput/train_samples_per_sec"], time.perf_counter() - t0))
            print(rows[-1], flush=True)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, "
             f"one seed; overrides: {args.set or 'none'}", "",
             "| experiment | strategy | test/acc | f1_macro | trainable | trainable params | samples/s | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {s} | {a:.3f} | {f:.3f} | {fr:.2%} | {tp:,} | {sps:.0f} | {w:.0f} |"
              for n, s, a, f, fr, tp, sps, w in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
