"""The ULMFiT finding's underfitting evidence: per arm and size, the last epoch's training loss (mean of seeds) and
the epoch each run restored (its best validation epoch), read from the full run's trials and run folders.

    python benchmarks/reproductions/ulmfit_table7/training_losses.py  # after `tlr reproduce ulmfit_table7`
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import optuna
import torch

URL = "sqlite:///runs/reproductions/ulmfit_table7/studies.db"
OUT = Path(__file__).parent / "results" / "training.md"


def arm(params: dict) -> str:
    """The trial's arm as `key=value` pairs of its swept keys (seed left out)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("seed", "data.shots"))


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: dict[tuple[str, int], list[tuple[float, int | None]]] = defaultdict(list)
    for name in ("ulmfit-full", "ulmfit-freez"):
        study = optuna.load_study(study_name=name, storage=URL)
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            run = Path(t.user_attrs["run_dir"])
            loss = json.loads((run / "metrics.json").read_text())["train/loss"]
            ckpt = run / "checkpoints" / "best.ckpt"
            epoch = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["epoch"] if ckpt.exists() \
                else None
            rows[(f"{name}: {arm(t.params)}", t.params["data.shots"])].append((loss, epoch))
    lines = ["| arm | shots per class | train loss, last epoch (mean) | restored epoch per seed |", "|---|---|---|---|"]
    for (name, shots), runs in sorted(rows.items()):
        lines.append(f"| {name} | {shots} | {statistics.mean(r[0] for r in runs):.3f} | {[r[1] for r in runs]} |")
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
