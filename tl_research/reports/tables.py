"""Benchmark tables from a study's stored trials: cells of per-seed values (rows x columns), their intervals, paired
comparisons against a baseline row and against each column's best row. Every number comes from `stats.py`; report
writers (report.py), plots (plots.py) and claim checks read a `Table`."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from tl_research import stats
from tl_research.errors import UserError

THROUGHPUT, TRAINABLE = "throughput/train_samples_per_sec", "params/trainable"
# metrics that are a share of a split's examples: their intervals resample examples too (the split size is known);
# shifted test sets (test_<shift>/acc) have the test split's size
PROPORTIONS = {"test/acc": "data/test_size", "test/acc_top5": "data/test_size", "val/acc": "data/val_size"}


@dataclass
class Cell:
    values: list[float]  # one per seed, in seed order
    seeds: list[int]
    sizes: list[int] | None = None  # examples behind each value (proportions only)
    runs: list[str | None] = field(default_factory=list)  # run folders (per-example predictions)
    interval: stats.Interval | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0


@dataclass
class Table:
    metric: str
    rows_key: str | None
    cols_key: str | None
    rows: list[Any]
    cols: list[Any]
    cells: dict[tuple[Any, Any], Cell]
    extras: dict[Any, dict[str, float]]  # per row: mean throughput and trainable params
    baseline: Any
    missing: int
    method: str = "bootstrap"  # the cell intervals: bootstrap (seeds and examples) or t
    alpha: float = stats.ALPHA
    vs_baseline: dict[tuple[Any, Any], stats.Comparison] = field(default_factory=dict)
    p_baseline_holm: dict[tuple[Any, Any], float] = field(default_factory=dict)
    # can the comparison reach p < alpha after Holm over this table's comparisons at all (exact tests at small n
    # cannot: 2 / 2^n times the number of comparisons)?
    reachable: dict[tuple[Any, Any], bool] = field(default_factory=dict)
    best: dict[Any, Any] = field(default_factory=dict)  # column -> row with the best mean
    tied: set[tuple[Any, Any]] = field(default_factory=set)  # not significantly worse than the column's best
    vs_best: dict[tuple[Any, Any], stats.Comparison] = field(default_factory=dict)
    p_best_holm: dict[tuple[Any, Any], float] = field(default_factory=dict)

    def seeds_needed(self, target_width: float) -> dict[tuple[Any, Any], int | None]:
        """Cells whose interval is wider than `target_width` -> seeds estimated for it (None: one seed, no
        variance to extrapolate from)."""
        out: dict[tuple[Any, Any], int | None] = {}
        for key, cell in self.cells.items():
            if cell.interval is not None and cell.interval.width > target_width:
                out[key] = stats.seeds_needed(cell.std, target_width) if cell.n > 1 else None
        return out


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


def _predictions(run_dir: str | None) -> dict[str, np.ndarray] | None:
    path = Path(run_dir) / "predictions.npz" if run_dir else None
    if path is None or not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in ("index", "label", "pred")}


def _tables(a: Cell, b: Cell, seeds: list[int], metric: str) -> list[np.ndarray] | None:
    """Per shared seed, the 2x2 agreement table of the two rows on their shared test examples (None unless every
    run left its predictions and each pair saw the same test set)."""
    if metric != "test/acc":
        return None
    out = []
    for s in seeds:
        pa, pb = _predictions(a.runs[a.seeds.index(s)]), _predictions(b.runs[b.seeds.index(s)])
        if pa is None or pb is None or not np.array_equal(pa["index"], pb["index"]):
            return None
        out.append(stats.agreement_table(pa["pred"], pb["pred"], pa["label"]))
    return out


def make_cell(by_seed: dict[int, optuna.trial.FrozenTrial], metric: str, method: str = "bootstrap") -> Cell:
    """One cell from its trials (seed -> trial), with its interval (examples resampled for proportions)."""
    size_key = PROPORTIONS.get(metric) or ("data/test_size" if re.fullmatch(r"test_\w+/acc", metric) else None)
    seeds = sorted(by_seed)
    ts = [by_seed[s] for s in seeds]
    sizes = [int(t.user_attrs[size_key]) for t in ts] if size_key and all(
        size_key in t.user_attrs for t in ts) else None
    cell = Cell([float(t.user_attrs[metric]) for t in ts], seeds, sizes, [t.user_attrs.get("run_dir") for t in ts])
    cell.interval = stats.cell_interval(cell.values, sizes, method if cell.n >= 3 else "bootstrap")
    return cell


def compare_cells(a: Cell, b: Cell, metric: str, alpha: float = stats.ALPHA) -> stats.Comparison | None:
    """a - b paired on their shared seeds (and, for test/acc, on their shared test examples); None: no shared seed."""
    seeds = sorted(set(a.seeds) & set(b.seeds))
    if not seeds:
        return None
    va = [a.values[a.seeds.index(s)] for s in seeds]
    vb = [b.values[b.seeds.index(s)] for s in seeds]
    return stats.compare(va, vb, _tables(a, b, seeds, metric), alpha)


def _holm(comparisons: dict[tuple[Any, Any], stats.Comparison]) -> dict[tuple[Any, Any], float]:
    keys = list(comparisons)
    return dict(zip(keys, stats.holm([comparisons[k].p for k in keys])))


def _row_label(trial: optuna.trial.FrozenTrial, row_keys: list[str]) -> Any:
    values = [trial.params.get(k) for k in row_keys]
    if not values:
        return "all"
    return values[0] if len(values) == 1 else ", ".join(str(v) for v in values)


def build_table(trials: list[optuna.trial.FrozenTrial], metric: str, rows_key: str | None, cols_key: str | None,
                baseline: Any = None, expected_cells: int | None = None, method: str = "bootstrap",
                alpha: float = stats.ALPHA) -> Table:
    keys = {k for t in trials for k in t.params}
    for key, flag in ((rows_key, "--rows"), (cols_key, "--cols")):
        if key is not None and key not in keys:
            raise UserError(f"{flag}: {key!r} is not a parameter of this study (parameters: {', '.join(sorted(keys))})")
    # a grid's other swept keys join the rows: keeping one trial per seed of a (row, col) would hide cells (a
    # search's trials, without seeds, stay grouped by row and column: their other keys are what was searched)
    grid = all("seed" in t.params for t in trials)
    others = sorted(k for k in keys if k not in (rows_key, cols_key, "seed")
                    and len({repr(t.params.get(k)) for t in trials}) > 1) if grid else []
    row_keys = ([rows_key] if rows_key else []) + others
    groups: dict[tuple[Any, Any], dict[int, optuna.trial.FrozenTrial]] = defaultdict(dict)
    extra: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        if metric not in t.user_attrs:
            continue
        cell = (_row_label(t, row_keys), t.params.get(cols_key) if cols_key else "all")
        groups[cell][int(t.params.get("seed", t.number))] = t
        for name in (THROUGHPUT, TRAINABLE):
            if name in t.user_attrs:
                extra[cell[0]][name].append(float(t.user_attrs[name]))
    if not groups:
        raise UserError(f"report: no completed trial has {metric!r}")
    cells = {k: make_cell(by_seed, metric, method) for k, by_seed in groups.items()}
    rows = sorted({r for r, _ in cells}, key=sort_key)
    cols = sorted({c for _, c in cells}, key=sort_key)
    if baseline is None:
        baseline = "linear_probe" if "linear_probe" in rows else rows[0]
    else:  # given on the command line as text: match a row by its label (a depth 6 is "6" there)
        matches = [r for r in rows if str(r) == str(baseline)]
        if not matches:
            raise UserError(f"--baseline: {baseline!r} is not a row of this table (rows: "
                            f"{', '.join(str(r) for r in rows)})")
        baseline = matches[0]
    missing = max(0, expected_cells - len(trials)) if expected_cells is not None else 0
    means = {r: {k: float(np.mean(v)) for k, v in d.items()} for r, d in extra.items()}
    table = Table(metric, ", ".join(row_keys) or None, cols_key, rows, cols, cells, means, baseline, missing, method,
                  alpha)
    for (r, c), cell in cells.items():
        base = cells.get((baseline, c))
        if r != baseline and base is not None:
            found = compare_cells(cell, base, metric, alpha)
            if found is not None:
                table.vs_baseline[(r, c)] = found
    table.p_baseline_holm = _holm(table.vs_baseline)
    family = sum(c.p == c.p for c in table.vs_baseline.values())
    table.reachable = {k: c.test == "mcnemar" or (c.test == "sign-flip"
                                                  and stats.min_sign_flip_p(c.n) * family < alpha)
                       for k, c in table.vs_baseline.items()}
    for c in cols:
        present = [r for r in rows if (r, c) in cells]
        table.best[c] = max(present, key=lambda r: cells[(r, c)].mean)
        for r in present:
            if r != table.best[c]:
                found = compare_cells(cells[(table.best[c], c)], cells[(r, c)], metric, alpha)
                if found is not None:
                    table.vs_best[(r, c)] = found
    table.p_best_holm = _holm(table.vs_best)
    for key, comp in table.vs_best.items():
        adjusted = table.p_best_holm[key]
        if not (comp.diff > 0 and adjusted < alpha):  # NaN (no valid test) never counts as worse
            table.tied.add(key)
    return table
