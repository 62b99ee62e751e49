"""The embedded-default main job: offline ImageNet MobileNetV2 -> Animal-MNIST, linear probe vs depth-k vs full."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tl_research.config import load_experiment

BASE: dict[str, Any] = {
    "name": "quickstart",
    "seed": 0,
    "backbone": {"name": "timm/mobilenetv2_100", "weights": "offline"},
    "data": {"name": "animal-mnist", "split_seed": 0, "train_limit": 500, "eval_limit": 500, "image_size": 96,
             "batch_size": 16},
    "optim": {"lr": 0.001, "weight_decay": 0.0001},
    "trainer": {"max_epochs": 5, "patience": 3, "progress_bar": False},
}

# (label, freeze section, optimizer changes), as in experiments/mobilenetv2_animal_*.yaml: the probe trains a
# fresh head only and takes a larger lr; depth 12 of 18 groups leaves the last 5 blocks + head conv to adapt
VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("linear_probe", {"strategy": "linear_probe"}, {"lr": 0.003}),
    ("depth_12", {"strategy": "depth", "depth": 12}, {}),
    ("full", {"strategy": "full"}, {}),
]


def quickstart_experiments() -> list[tuple[str, Any]]:
    out = []
    for label, freeze, optim in VARIANTS:
        data = copy.deepcopy(BASE)
        data["name"] = f"quickstart-{label}"
        data["freeze"] = freeze
        data["optim"].update(optim)
        out.append((label, load_experiment(data=data)))
    return out


def quickstart(out: str | Path = "runs/quickstart") -> list[dict[str, Any]]:
    """Run the three single runs into `out/<label>-<time>` and print one comparison table."""
    import time

    from tl_research.cli import print_table
    from tl_research.run import run

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = []
    for label, exp in quickstart_experiments():
        print(f"\n=== {label}: {exp.backbone.name} -> {exp.data.name} ({exp.data.train_limit} training images) ===")
        results.append((label, run(exp, Path(out) / f"{label}-{stamp}").metrics))
    print("\nMobileNetV2 (ImageNet, offline weights) -> Animal-MNIST")
    print_table([[label, f"{m['test/acc']:.3f}", f"{m['test/f1_macro']:.3f}", f"{m['params/trainable']:,}",
                   f"{m['freeze/trainable_fraction']:.1%}", f"{m['throughput/train_samples_per_sec']:.0f}"]
                  for label, m in results],
                 ["strategy", "test/acc", "f1_macro", "trainable", "fraction", "train samples/s"])
    print(f"\nruns: {Path(out).resolve()}")
    for label, m in results:
        if "wandb_dir" in m:
            print(f"W&B ({label}): wandb sync {m['wandb_dir']}")
    return [m for _, m in results]
