"""Benchmark tables from a study's stored trials: cells of per-seed values, rows x columns, paired tests against a
baseline row. Report writers (report.py) and plots (plots.py) both read a `Table`."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from tl_research.errors import UserError

THROUGHPUT, TRAINABLE = "throughput/train_samples_per_sec", "params/trainable"


@dataclass
class Cell:
    values: list[float]  # one per seed, in seed order
    seeds: list[int]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    def ci95(self) -> tuple[float, float]:
        """Student-t 95 % confidence interval of the mean (the mean itself when n = 1)."""
        from scipy import stats

        if self.n < 2:
            return self.mean, self.mean
        half = stats.t.ppf(0.975, self.n - 1) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half


@dataclass
class Table:
    metric: str
    rows_key: str | None
    cols_key: str | None
    rows: list[Any]
    cols: list[Any]
    cells: dict[tuple[Any, Any], Cell]
    extras: dict[Any, dict[str, float]]  # per row: mean throughput and trainable params
    pvalues: dict[tuple[Any, Any], tuple[float, float]]  # (row, col) -> (paired t, Wilcoxon) vs the baseline
    baseline: Any
    missing: int


def sort_key(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


CURVE_KEYS = ("data.shots", "freeze.depth")


def default_axes(trials: list[optuna.trial.FrozenTrial]) -> tuple[str | None, str | None]:
    """Rows: the strategy when swept; columns: shots or depth when swept (a one-row table for a pure depth
    ablation or few-shot sweep, so that it still gets its curve)."""
    swept = [k for k in dict.fromkeys(k for t in trials for k in t.params) if k != "seed"]
    if not swept:
        raise UserError("report: the study sweeps no key besides the seed; pass --rows")
    rows = "freeze.strategy" if "freeze.strategy" in swept else next((k for k in swept if k not in CURVE_KEYS), None)
    cols = next((k for k in (*CURVE_KEYS, *swept) if k in swept and k != rows), None)
    return rows, cols


def build_table(trials: list[optuna.trial.FrozenTrial], metric: str, rows_key: str | None, cols_key: str | None,
                baseline: Any = None, expected_cells: int | None = None) -> Table:
    from scipy import stats

    keys = {k for t in trials for k in t.params}
    for key, flag in ((rows_key, "--rows"), (cols_key, "--cols")):
        if key is not None and key not in keys:
            raise UserError(f"{flag}: {key!r} is not a parameter of this study (parameters: {', '.join(sorted(keys))})")
    groups: dict[tuple[Any, Any], dict[int, float]] = defaultdict(dict)
    extra: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        if metric not in t.user_attrs:
            continue
        cell = (t.params[rows_key] if rows_key else "all", t.params.get(cols_key) if cols_key else "all")
        groups[cell][int(t.params.get("seed", t.number))] = float(t.user_attrs[metric])
        for name in (THROUGHPUT, TRAINABLE):
            if name in t.user_attrs:
                extra[cell[0]][name].append(float(t.user_attrs[name]))
    if not groups:
        raise UserError(f"report: no completed trial has {metric!r}")
    cells = {k: Cell([v[s] for s in sorted(v)], sorted(v)) for k, v in groups.items()}
    rows = sorted({r for r, _ in cells}, key=sort_key)
    cols = sorted({c for _, c in cells}, key=sort_key)
    if baseline is None:
        baseline = "linear_probe" if "linear_probe" in rows else rows[0]
    pvalues = {}
    for (r, c), cell in cells.items():
        base = cells.get((baseline, c))
        if r == baseline or base is None:
            continue
        seeds = sorted(set(cell.seeds) & set(base.seeds))
        a = [groups[(r, c)][s] for s in seeds]
        b = [groups[(baseline, c)][s] for s in seeds]
        p_t = p_w = float("nan")
        if len(seeds) >= 2 and np.any(np.subtract(a, b) != 0):
            p_t = float(stats.ttest_rel(a, b).pvalue)
            p_w = float(stats.wilcoxon(a, b).pvalue)
        pvalues[(r, c)] = (p_t, p_w)
    extras = {r: {k: float(np.mean(v)) for k, v in d.items()} for r, d in extra.items()}
    missing = max(0, expected_cells - len(trials)) if expected_cells is not None else 0
    return Table(metric, rows_key, cols_key, rows, cols, cells, extras, pvalues, baseline, missing)
