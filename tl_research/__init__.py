"""tl_research: transfer-learning research on ordered layer groups.

The Python API, one place to import from (each name loads its module on first use, so `import tl_research` and
the `tlr` command stay light):

    from tl_research import load_experiment, run, build, load_run, predict, study_frame

    exp = load_experiment("experiment.yaml", ["freeze.strategy=lp_ft"])
    result = run(exp)                      # fit, test, write the run folder -> RunResult(run_dir, metrics)
    parts = build(exp)                     # or the parts, for your own lightning.Trainer:
    # trainer.fit(parts.module, datamodule=parts.data)
    loaded = load_run(result.run_dir)      # a finished run, ready to predict
    frame = study_frame("my-study", "sqlite:///runs/studies.db")   # a study as a pandas DataFrame
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {"load_experiment": "tl_research.config", "Experiment": "tl_research.config", "run": "tl_research.pipeline",
        "build": "tl_research.pipeline", "Built": "tl_research.pipeline", "RunResult": "tl_research.pipeline",
        "load_run": "tl_research.lifecycle.inference", "predict": "tl_research.lifecycle.inference",
        "study_frame": "tl_research.reports.frame"}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'tl_research' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
