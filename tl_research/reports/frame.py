"""A study as a pandas DataFrame: one row per finished trial, its parameters and metrics as columns (a tuned
study's phase and arm included), for a notebook's own analysis. Read from a storage or from a results archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from tl_research.errors import UserError
from tl_research.reports.archive import JOURNAL, Archive
from tl_research.reports.tables import completed_trials
from tl_research.studies.storage import open_storage


def study_frame(name: str, source: str | Path) -> Any:
    """The finished trials of study `name` in `source` (a storage URL, or a results archive folder): columns
    `trial`, the parameters (`freeze.strategy`, `seed`, ...), and every metric and label the trials recorded
    (`test/acc`, `val/acc`, `phase`, `arm` as its settings' JSON, `run_dir`, ...)."""
    import pandas as pd

    folder = Path(str(source)).expanduser()
    storage = Archive(folder).storage if (folder / JOURNAL).is_file() else open_storage(str(source), must_exist=True)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise UserError(f"study_frame: no study {name!r} in {source} (studies: {names})") from None
    rows = []
    for t in completed_trials(study):
        attrs = {k: v for k, v in t.user_attrs.items() if isinstance(v, (int, float, str, bool)) or v is None}
        rows.append({"trial": t.number, **t.params, **attrs})
    return pd.DataFrame(rows)
