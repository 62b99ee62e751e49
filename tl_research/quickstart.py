"""The embedded-default main job: a few-shot study of MobileNetV2 (offline ImageNet weights) on Animal-MNIST,
linear probe vs depth 12 vs full fine-tuning, then its report. Offline; about five minutes on 2 CPU cores."""

from __future__ import annotations

import time
from pathlib import Path

STUDY = Path(__file__).with_name("quickstart_study.yaml")


def quickstart(out: str | Path = "runs/quickstart") -> None:
    from tl_research.report import run_report, to_markdown
    from tl_research.study import run_study
    from tl_research.studyspec import load_study

    out = Path(out)
    t0 = time.perf_counter()
    spec = load_study(STUDY, [f"output_dir={out}"])
    url = f"sqlite:///{out / 'studies.db'}"
    run_study(spec, url)
    table, files = run_report(spec.name, url, out / "report")
    print("\nMobileNetV2 (ImageNet, offline weights) -> Animal-MNIST, accuracy by examples per class\n")
    print(to_markdown(table))
    print(f"done in {time.perf_counter() - t0:.0f} s")
    print(f"tables and plots: {', '.join(str(f) for f in files)}")
    runs = sorted((out / "studies" / spec.name).glob("trial-*/wandb/offline-run-*"))
    if runs:
        print(f"W&B offline runs ({len(runs)}): wandb sync {out / 'studies' / spec.name}/trial-*/wandb/offline-run-*")
    print(f"study database: {url}  (tlr report {spec.name} --storage {url}; optuna-dashboard {url})")
