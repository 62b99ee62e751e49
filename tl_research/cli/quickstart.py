"""The embedded-default main job: a few-shot study of MobileNetV2 (offline ImageNet weights) on Animal-MNIST,
the converged linear probe vs fine-tuning, then its report (the CLI's `tlr quickstart` runs and prints it)."""

from __future__ import annotations

from pathlib import Path

from tl_research.studies.studyspec import StudySpec, load_study

STUDY = Path(__file__).with_name("quickstart_study.yaml")


def quickstart_spec(out: str | Path = "runs/quickstart") -> tuple[StudySpec, str]:
    """The quickstart study, writing under `out`, and its SQLite storage URL."""
    out = Path(out)
    return load_study(STUDY, [f"output_dir={out}"]), f"sqlite:///{out / 'studies.db'}"
