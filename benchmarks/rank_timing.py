"""`tlr rank` wall time over 4 offline backbones x 4 freeze depths on Animal-MNIST, cold (empty feature cache) and
warm (the same call again), side by side in one process.

    python benchmarks/rank_timing.py --out benchmarks/results/rank_timing.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from tl_research.config import load_experiment
from tl_research.scores.rank import ordered, rank, to_markdown

BACKBONES = ["timm/mobilenetv2_100", "timm/tf_efficientnet_lite0", "timm/tf_efficientnet_lite1",
             "timm/tf_efficientnet_lite2"]
DEPTHS = [4, 8, 12, 16]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/rank_timing.md")
    parser.add_argument("--per-class", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TLR_CACHE_DIR"] = cache
        exp = load_experiment(data={"data": {"name": "animal-mnist", "image_size": 64},
                                    "tracking": {"mode": "disabled"}})
        times = {}
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            found = rank(exp, BACKBONES, DEPTHS, args.per_class)
            times[label] = time.perf_counter() - t0
    lines = [
        "# `tlr rank`: 4 backbones x 4 depths on Animal-MNIST (64 px)", "",
        f"Command: `python benchmarks/rank_timing.py` — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; {found[0].examples} training + as many "
        f"validation examples scored per candidate (class-balanced, {args.per_class} per class).", "",
        "| run | wall seconds (16 candidates, all six scores) |", "|---|---|",
        f"| cold (features extracted into an empty cache) | {times['cold']:.1f} |",
        f"| warm (the same call again: features read from the cache) | {times['warm']:.1f} |", "",
        "Ranking of the warm call, best LogME first (per-candidate seconds include the scores):", "",
        to_markdown(ordered(found, "logme")),
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
