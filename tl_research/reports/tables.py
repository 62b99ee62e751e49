"""Benchmark tables from a study's stored trials: cells of per-seed values (rows x columns), their intervals, paired
comparisons against a baseline row and against each column's best row. Every number comes from `stats.py`; report
writers (report.py), plots (plots.py) and claim checks read a `Table`."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from tl_research import stats
from tl_research.errors import UserError
from tl_research.reports import predictions
from tl_research.runtime.record import AT_CHANCE
from tl_research.studies import tuned

THROUGHPUT, TRAINABLE = "throughput/train_samples_per_sec", "params/trainable"
# metrics that are a share of a split's examples: their intervals resample examples too (the split size is known);
# shifted test sets (test_<shift>/acc) have the test split's size
PROPORTIONS = {"test/acc": "data/test_size", "test/acc_top5": "data/test_size", "val/acc": "data/val_size"}


@dataclass
class Cell:
    values: list[float]  # one per seed, in seed order
    seeds: list[int]
    sizes: list[int] | None = None  # examples behind each value (proportions only)
    runs: list[str | None] = field(default_factory=list)  # run folders
    correct: np.ndarray | None = None  # (seeds x examples) 0/1 on the shared test set, when every run left them
    index: np.ndarray | None = None  # the test examples the columns of `correct` follow
    interval: stats.Interval | None = None
    at_chance: int = 0  # runs that learned nothing (metrics.json's flag/at_chance): a failed fit, not a result

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    def components(self) -> tuple[stats.Components, int] | None:
        """Variance components and test size the cell's design rests on (seeds only: the seed variance, no test
        term); None with one seed."""
        if self.n < 2:
            return None
        if self.correct is not None:
            return stats.components(self.correct), self.correct.shape[1]
        return stats.Components(self.std ** 2, 0.0, 0.0), 1


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
    alpha: float = stats.ALPHA
    # differences to the baseline row / to each column's best row, each a family of simultaneous intervals at the
    # Bonferroni level, with family-adjusted p
    vs_baseline: dict[tuple[Any, Any], stats.Comparison] = field(default_factory=dict)
    best: dict[Any, Any] = field(default_factory=dict)  # column -> row with the best mean
    vs_best: dict[tuple[Any, Any], stats.Comparison] = field(default_factory=dict)  # best - row

    def worse(self, key: tuple[Any, Any]) -> bool:
        """Is the row shown worse than its column's best (the interval of best - row wholly above 0)?"""
        comp = self.vs_best.get(key)
        return comp is not None and stats.side(comp.interval) > 0

    def seeds_needed(self, target_width: float) -> dict[tuple[Any, Any], int | None]:
        """Cells whose interval is wider than `target_width` -> seeds estimated for that width at the cell's test
        size (None: one seed so far, or the test-set term alone is wider)."""
        out: dict[tuple[Any, Any], int | None] = {}
        for key, cell in self.cells.items():
            if cell.interval is not None and cell.interval.width > target_width:
                design = cell.components()
                out[key] = None if design is None else stats.seeds_for_width(*design, target_width)
        return out


def sort_key(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def compared(trials: list[optuna.trial.FrozenTrial]) -> tuple[list[optuna.trial.FrozenTrial], set[str]]:
    """The trials a table or claim compares, and the parameters that do not tell its cells apart: a tuned study's
    seed runs (its tuning trials hold no test metric), whose tuned settings follow from their arm; other studies'
    trials as they are."""
    if not any(tuned.PHASE in t.user_attrs for t in trials):
        return trials, set()
    seeds = [t for t in trials if t.user_attrs.get(tuned.PHASE) == tuned.SEED]
    return seeds, {k for t in seeds for k in t.params if k != "seed" and k not in tuned.arm_of(t)}


CURVE_KEYS = ("data.shots", "freeze.depth")


def default_axes(trials: list[optuna.trial.FrozenTrial]) -> tuple[str | None, str | None]:
    """Rows: the strategy when swept; columns: shots or depth when swept (a one-row table for a pure depth
    ablation or few-shot sweep, so that it still gets its curve)."""
    trials, hidden = compared(trials)
    swept = [k for k in dict.fromkeys(k for t in trials for k in t.params) if k != "seed" and k not in hidden]
    if not swept:
        raise UserError("report: the study sweeps no key besides the seed; pass --rows")
    rows = "freeze.strategy" if "freeze.strategy" in swept else next((k for k in swept if k not in CURVE_KEYS), None)
    cols = next((k for k in (*CURVE_KEYS, *swept) if k in swept and k != rows), None)
    return rows, cols


def size_key(metric: str) -> str | None:
    """The split size behind a metric that is a share of its examples (an accuracy), else None."""
    return PROPORTIONS.get(metric) or ("data/test_size" if re.fullmatch(r"test_\w+/acc", metric) else None)


def make_cell(by_seed: dict[int, optuna.trial.FrozenTrial], metric: str,
              lookup: predictions.Lookup = predictions.from_run_folder) -> Cell:
    """One cell from its trials (seed -> trial), with its interval: crossed (seeds x test examples) when every run
    left its predictions, else over seeds only."""
    size = size_key(metric)
    seeds = sorted(by_seed)
    ts = [by_seed[s] for s in seeds]
    sizes = [int(t.user_attrs[size]) for t in ts] if size and all(size in t.user_attrs for t in ts) else None
    cell = Cell([float(t.user_attrs[metric]) for t in ts], seeds, sizes, [t.user_attrs.get("run_dir") for t in ts],
                at_chance=sum(bool(t.user_attrs.get(AT_CHANCE)) for t in ts))
    found = predictions.correct_matrix(ts, cell.values, lookup, metric) if metric in predictions.FILES else None
    if found is not None:
        cell.correct, cell.index = found
        cell.interval = stats.accuracy_interval(cell.correct)
    else:
        cell.interval = stats.seeds_interval(cell.values, size=sizes[0] if sizes else None)
    return cell


def paired_matrices(a: Cell, b: Cell) -> tuple[np.ndarray, np.ndarray] | None:
    """The two cells' 0/1 matrices on their shared seeds (rows in seed order), when both have predictions on the
    same test set (None otherwise)."""
    if a.correct is None or b.correct is None or not np.array_equal(a.index, b.index):
        return None
    seeds = sorted(set(a.seeds) & set(b.seeds))
    return a.correct[[a.seeds.index(s) for s in seeds]], b.correct[[b.seeds.index(s) for s in seeds]]


def compare_cells(a: Cell, b: Cell, family: int = 1, alpha: float = stats.ALPHA) -> stats.Comparison | None:
    """a - b paired on their shared seeds (and on their shared test examples when both have predictions on the
    same test set), as one of `family` simultaneous comparisons; None: no shared seed."""
    seeds = sorted(set(a.seeds) & set(b.seeds))
    if not seeds:
        return None
    confidence = stats.bonferroni(family, alpha)
    matrices = paired_matrices(a, b)
    if matrices is not None:
        comp = stats.compare_matrices(*matrices, confidence)
    else:
        comp = stats.compare_seeds([a.values[a.seeds.index(s)] for s in seeds],
                                   [b.values[b.seeds.index(s)] for s in seeds], confidence)
    return dataclasses.replace(comp, p=stats.adjusted(comp.p, family))


def _row_label(trial: optuna.trial.FrozenTrial, row_keys: list[str]) -> Any:
    values = [trial.params.get(k) for k in row_keys]
    if not values:
        return "all"
    return values[0] if len(values) == 1 else ", ".join(str(v) for v in values)


def build_table(trials: list[optuna.trial.FrozenTrial], metric: str, rows_key: str | None, cols_key: str | None,
                baseline: Any = None, expected_cells: int | None = None, alpha: float = stats.ALPHA,
                lookup: predictions.Lookup = predictions.from_run_folder) -> Table:
    trials, hidden = compared(trials)
    keys = {k for t in trials for k in t.params} - hidden
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
        raise UserError(f"metric: no completed trial has {metric!r} (none finished yet, or its runs do not record it)")
    cells = {k: make_cell(by_seed, metric, lookup) for k, by_seed in groups.items()}
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
    table = Table(metric, ", ".join(row_keys) or None, cols_key, rows, cols, cells, means, baseline, missing, alpha)
    against_base = [((r, c), cell, cells[(baseline, c)]) for (r, c), cell in cells.items()
                    if r != baseline and (baseline, c) in cells]
    table.vs_baseline = _family(against_base, alpha)
    for c in cols:
        table.best[c] = max((r for r in rows if (r, c) in cells), key=lambda r: cells[(r, c)].mean)
    against_best = [((r, c), cells[(table.best[c], c)], cell) for (r, c), cell in cells.items()
                    if r != table.best[c]]
    table.vs_best = _family(against_best, alpha)
    return table


def _family(pairs: list[tuple[tuple[Any, Any], Cell, Cell]], alpha: float) -> dict[tuple[Any, Any], stats.Comparison]:
    """The a - b comparisons of `pairs` (key, a, b) as one family of simultaneous intervals (those sharing a seed)."""
    family = sum(bool(set(a.seeds) & set(b.seeds)) for _, a, b in pairs)
    found = {key: compare_cells(a, b, family, alpha) for key, a, b in pairs}
    return {key: comp for key, comp in found.items() if comp is not None}
