"""The ULMFiT finding's underfitting evidence: per arm and size, the last epoch's training loss (mean of seeds) and
the epoch each run restored (its best validation epoch), read from the full run's trials and run folders.

    python benchmarks/reproductions/ulmfit_table7/training_losses.py [STUDY ...]  # after a part of the full run

Each part of the full run (`--part full`, `--part freez`) runs in its own session, so the run folders of one
study only: the rows of the studies named (default: both) are replaced, the other study's rows are kept. The table
lives beside the results, not in `results/` (which `--rejudge` regenerates from the archive alone).
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import optuna
import torch

URL = "sqlite:///runs/reproductions/ulmfit_table7/studies.db"
OUT = Path(__file__).parent / "training.md"
STUDIES = ("ulmfit-full", "ulmfit-freez")
HEADER = ["| arm | shots per class | train loss, last epoch (mean) | restored epoch per seed |", "|---|---|---|---|"]


def arm(params: dict) -> str:
    """The trial's arm as `key=value` pairs of its swept keys (seed left out)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("seed", "data.shots"))


def main(names: list[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: dict[tuple[str, int], list[tuple[float, int | None]]] = defaultdict(list)
    for name in names:
        study = optuna.load_study(study_name=name, storage=URL)
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            run = Path(t.user_attrs["run_dir"])
            loss = json.loads((run / "metrics.json").read_text())["train/loss"]
            ckpt = run / "checkpoints" / "best.ckpt"
            epoch = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["epoch"] if ckpt.exists() \
                else None
            rows[(f"{name}: {arm(t.params)}", t.params["data.shots"])].append((loss, epoch))
    # the other study's rows, as an earlier part left them
    kept = [line for line in (OUT.read_text().splitlines()[2:] if OUT.exists() else [])
            if not any(line.startswith(f"| {name}: ") for name in names)]
    new = [f"| {name} | {shots} | {statistics.mean(r[0] for r in runs):.3f} | {[r[1] for r in runs]} |"
           for (name, shots), runs in rows.items()]
    # sorted by arm, then numerically by size
    body = sorted(kept + new, key=lambda line: (line.split(" | ")[0], int(line.split(" | ")[1])))
    OUT.write_text("\n".join(HEADER + body) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    unknown = [a for a in sys.argv[1:] if a not in STUDIES]
    if unknown:
        sys.exit(f"training_losses.py: {unknown[0]} is not a study of this finding ({', '.join(STUDIES)})")
    main(sys.argv[1:] or list(STUDIES))
