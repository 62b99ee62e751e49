"""Training / inference throughput and peak memory of a real backbone on a GPU, settings side by side in one
process (fp32 vs bf16 autocast vs bf16 + channels-last), recorded with the GPU's name.

    python benchmarks/gpu_throughput.py --out benchmarks/results/gpu_throughput.md

On a machine without CUDA it says so and exits 0 (nothing is recorded).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from tl_research.config import load_experiment
from tl_research.pipeline import run

SETTINGS = [("fp32", ["trainer.precision=32-true"]),
            ("bf16-mixed", ["trainer.precision=bf16-mixed"]),
            ("bf16-mixed + channels_last", ["trainer.precision=bf16-mixed", "trainer.channels_last=true"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="experiments/mobilenetv2_animal_full.yaml")
    p.add_argument("--out", default="benchmarks/results/gpu_throughput.md")
    p.add_argument("--set", action="append", default=["data.image_size=224", "data.batch_size=128",
                                                      "data.train_limit=4000", "trainer.max_epochs=2"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing measured")
        return
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in SETTINGS:
            exp = load_experiment(args.config, [f"output_dir={tmp}", "trainer.accelerator=gpu",
                                                "trainer.progress_bar=false", "trainer.patience=null",
                                                *args.set, *overrides])
            torch.cuda.reset_peak_memory_stats()
            m = run(exp).metrics
            rows.append((label, m["throughput/train_samples_per_sec"], m["throughput/infer_samples_per_sec"],
                         m["memory/peak_mb"], m["test/acc"]))
            print(rows[-1], flush=True)
    base = rows[0][1]
    lines = [f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; "
             f"{args.config} with {' '.join(args.set)}", "",
             "| setting | train samples/s | vs fp32 | infer samples/s | peak MB | test/acc |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {lab} | {tr:.0f} | {tr / base:.2f}x | {inf:.0f} | {mem:.0f} | {acc:.3f} |"
              for lab, tr, inf, mem, acc in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
