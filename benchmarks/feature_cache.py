"""The feature cache and the converged probe, measured side by side in one process.

    python benchmarks/feature_cache.py --out benchmarks/results/feature_cache.md [--quick]

1. Few-shot linear-probe curves (shots x 5 seeds; each seed draws its own support set) for MobileNetV2 /
   Animal-MNIST and MiniLM / Rotten Tomatoes: today's uncached SGD probe vs the cached L-BFGS probe, cold (empty
   cache) and warm, with the floor (one prefix pass over the rows used + the solver time of every cell).
2. The L-BFGS probe against scikit-learn's LogisticRegression on the same cached features, split and C.
3. Time of one training step of depth-k on cached prefix outputs vs full fine-tuning, for every k.
4. Cached vs uncached run of the same depth-k experiment (same seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tl_research.config import load_experiment
from tl_research.pipeline import run

# each experiment's own budget (epochs, batch size), on the project's split: the whole validation and test sets
CURVES = {"MobileNetV2 / Animal-MNIST": ("experiments/mobilenetv2_animal_linear_probe.yaml",
                                        ["data.image_size=64", "data.train_limit=null", "data.eval_limit=null"]),
          "MiniLM / Rotten Tomatoes": ("experiments/minilm_rotten_tomatoes_linear_probe.yaml",
                                       ["data.train_limit=null", "data.eval_limit=null"])}
SHOTS, SEEDS = [1, 2, 4, 8, 16, 64], 5


def _run(config: str, overrides: list[str], out: Path) -> tuple[dict, float]:
    exp = load_experiment(config, [f"output_dir={out}", "trainer.progress_bar=false", "tracking.mode=disabled",
                                   *overrides])
    t0 = time.perf_counter()
    metrics = run(exp).metrics
    return metrics, time.perf_counter() - t0


def curve(config: str, base: list[str], mode: list[str], shots: list[int], seeds: int, out: Path) -> dict:
    wall, solver, extract, accs = 0.0, 0.0, 0.0, {}
    for k in shots:
        for s in range(seeds):
            m, dt = _run(config, [*base, *mode, f"data.shots={k}", f"seed={s}", f"data.subset_seed={s}"], out)
            wall += dt
            solver += m.get("probe/solve_seconds", 0.0)
            extract += m.get("cache/extract_seconds", 0.0)
            accs.setdefault(k, []).append(m["test/acc"])
    return {"wall": wall, "solver": solver, "extract": extract,
            "acc": {k: statistics.mean(v) for k, v in accs.items()}}


def section_curves(shots: list[int], seeds: int, tmp: Path) -> list[str]:
    lines = ["## 1. Few-shot linear-probe curve: cached L-BFGS vs today's uncached SGD probe", "",
             f"shots {shots} x {seeds} seeds (support set drawn per seed), whole validation and test splits; wall = "
             "sum of `run()` wall times over the curve. Floor = one prefix pass over the rows the curve used "
             "(the cold run's extraction) + every cell's L-BFGS solve; what a warm run adds to it is per-run "
             "set-up (Lightning, checkpoints, validation and test passes over cached rows).", "",
             "| backbone / dataset | uncached SGD (s) | cached cold (s) | cached warm (s) | floor (s) | "
             "warm speed-up | cold speed-up |", "|---|---|---|---|---|---|---|"]
    accs = []
    for name, (config, base) in CURVES.items():
        os.environ["TLR_CACHE_DIR"] = str(tmp / f"cache-{len(accs)}")
        uncached = curve(config, base, ["cache.mode=off", "freeze.probe=sgd"], shots, seeds, tmp)
        cold = curve(config, base, ["freeze.probe=lbfgs"], shots, seeds, tmp)
        warm = curve(config, base, ["freeze.probe=lbfgs"], shots, seeds, tmp)
        floor = cold["extract"] + warm["solver"]
        lines.append(f"| {name} | {uncached['wall']:.0f} | {cold['wall']:.0f} | {warm['wall']:.0f} | {floor:.0f} | "
                     f"{uncached['wall'] / warm['wall']:.1f}x | {uncached['wall'] / cold['wall']:.1f}x |")
        accs.append((name, uncached["acc"], warm["acc"]))
        print(lines[-1], flush=True)
    lines += ["", "Mean test accuracy over seeds (uncached SGD probe -> cached L-BFGS probe):", "",
              "| backbone / dataset | " + " | ".join(f"{k} shots" for k in shots) + " |",
              "|---|" + "---|" * len(shots)]
    for name, sgd, lbfgs in accs:
        lines.append(f"| {name} | " + " | ".join(f"{sgd[k]:.3f} -> {lbfgs[k]:.3f}" for k in shots) + " |")
    return lines


def section_sklearn(tmp: Path) -> list[str]:
    from sklearn.linear_model import LogisticRegression

    from tl_research.pipeline import build_backbone_from, build_data_from, build_strategy_from
    from tl_research.training.probe import fit_logistic

    exp = load_experiment("experiments/mobilenetv2_animal_linear_probe.yaml",
                          ["data.image_size=64", "data.eval_limit=1000", "tracking.mode=disabled"])
    backbone = build_backbone_from(exp)
    data = build_data_from(exp, backbone, build_strategy_from(exp, backbone), tmp).data
    (xt, yt), (xs, ys) = data.tensors("train"), data.tensors("test")
    lines = ["## 2. L-BFGS probe vs scikit-learn LogisticRegression (same cached features, split and C)", "",
             f"MobileNetV2 / Animal-MNIST, 64 px, {len(yt)} train / {len(ys)} test; C = 1 / (l2 * n_train).", "",
             "| C | ours test acc | sklearn test acc | difference (points) | ours s | sklearn s |",
             "|---|---|---|---|---|---|"]
    for c in (0.1, 1.0, 10.0):
        t0 = time.perf_counter()
        w, b, _ = fit_logistic(xt, yt, 10, 1.0 / (c * len(yt)))
        ours_s = time.perf_counter() - t0
        ours = float(((xs.double() @ w.T + b).argmax(1) == ys).double().mean())
        t0 = time.perf_counter()
        sk = LogisticRegression(C=c, max_iter=5000).fit(xt.numpy(), yt.numpy())
        sk_s = time.perf_counter() - t0
        ref = sk.score(xs.numpy(), ys.numpy())
        lines.append(f"| {c:g} | {ours:.4f} | {ref:.4f} | {100 * (ours - ref):+.2f} | {ours_s:.2f} | {sk_s:.2f} |")
        print(lines[-1], flush=True)
    return lines


def _step_time(module: torch.nn.Module, params: list, x, y: torch.Tensor, steps: int = 15) -> float:
    opt = torch.optim.AdamW(params, lr=1e-4)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def section_depth_steps() -> list[str]:
    from tl_research.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("timm/mobilenetv2_100", "offline")
    head = torch.nn.Linear(backbone.num_features, 10)
    x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 10, (32,))
    n = len(backbone.layer_groups())
    backbone.train()
    full = _step_time(torch.nn.Sequential(backbone, head), [*backbone.parameters(), *head.parameters()], x, y)
    lines = ["## 3. One training step: depth k on cached prefix outputs vs full fine-tuning", "",
             f"MobileNetV2, 64 px, batch 32, AdamW, median of 15 steps; full fine-tuning: {1000 * full:.1f} ms/step.",
             "", "| k | ms / step (cached prefix) | speed-up vs full |", "|---|---|---|"]
    for k in range(1, n + 1):
        split = backbone.split(k)
        with torch.no_grad():
            cached = split.prefix(x)
        trainable = [p for g in backbone.layer_groups()[k:] for p in g.params.values()]
        t = _step_time(torch.nn.Sequential(split.suffix, head), [*trainable, *head.parameters()], cached, y)
        lines.append(f"| {k} | {1000 * t:.1f} | {full / t:.1f}x |")
        print(lines[-1], flush=True)
    return lines


def section_equal(tmp: Path) -> list[str]:
    cfg = "experiments/mobilenetv2_animal_depth.yaml"
    rows = []
    for mode in ("auto", "off"):
        m, dt = _run(cfg, [f"cache.mode={mode}", "data.image_size=64"], tmp)
        rows.append((mode, m, dt))
    lines = ["## 4. Cached vs uncached run of the same depth-k experiment", "",
             f"`{cfg}` at 64 px, seed 0 (freeze depth {rows[0][1]['freeze/depth']}).", "",
             "| cache | used | test/acc | val/acc | train/loss | wall s |", "|---|---|---|---|---|---|"]
    for mode, m, dt in rows:
        lines.append(f"| {mode} | {m['cache/used']} | {m['test/acc']:.4f} | {m['val/acc']:.4f} | "
                     f"{m['train/loss']:.5f} | {dt:.0f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="benchmarks/results/feature_cache.md")
    p.add_argument("--quick", action="store_true", help="2 shot counts x 2 seeds (a smoke run)")
    p.add_argument("--sections", default="1,2,3,4")
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    shots, seeds = ([1, 16], 2) if args.quick else (SHOTS, SEEDS)
    wanted = set(args.sections.split(","))
    lines = [f"# Feature cache and converged probe — measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
             f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "",
             f"Command: `python benchmarks/feature_cache.py --out {args.out}"
             f"{' --quick' if args.quick else ''}`", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for key, section in (("1", lambda: section_curves(shots, seeds, Path(tmp))),
                             ("2", lambda: section_sklearn(Path(tmp))), ("3", section_depth_steps),
                             ("4", lambda: section_equal(Path(tmp)))):
            if key in wanted:
                lines += [*section(), ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(json.dumps({"wrote": args.out}))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
