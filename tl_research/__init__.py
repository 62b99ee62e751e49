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
import sys
import types
from typing import Any

__version__ = "0.1.0"

_API = {"load_experiment": "tl_research.config", "Experiment": "tl_research.config", "run": "tl_research.run",
        "build": "tl_research.run", "Built": "tl_research.run", "RunResult": "tl_research.run",
        "load_run": "tl_research.lifecycle.inference", "predict": "tl_research.lifecycle.inference",
        "study_frame": "tl_research.reports.frame"}
__all__ = ["__version__", *_API]


def _exported(name: str, module: str) -> property:
    def get(_package: types.ModuleType) -> Any:
        return getattr(importlib.import_module(module), name)

    def ignore(_package: types.ModuleType, _value: Any) -> None:
        """Importing the submodule tl_research.run binds it under its name: `tl_research.run` stays the function."""

    return property(get, ignore)


# a module class whose attributes are the API's names, each loaded on first use (properties, unlike a module
# __getattr__, still answer once a submodule of the same name is imported)
sys.modules[__name__].__class__ = type("Package", (types.ModuleType,),
                                       {name: _exported(name, module) for name, module in _API.items()})
