"""Benchmark tables and plots from a study's stored trials: mean ± std, 95 % CIs, n, paired tests, curves."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
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


def _sort_key(v: Any) -> tuple:
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
    rows = sorted({r for r, _ in cells}, key=_sort_key)
    cols = sorted({c for _, c in cells}, key=_sort_key)
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


def _fmt_p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.3g}"


def _best_rows(table: Table) -> dict[Any, Any]:
    return {c: max((r for r in table.rows if (r, c) in table.cells), key=lambda r: table.cells[(r, c)].mean)
            for c in table.cols}


def to_markdown(table: Table) -> str:
    best = _best_rows(table)
    head = [f"{table.rows_key or ''} \\ {table.cols_key}" if table.cols_key else (table.rows_key or "")]
    head += [f"{table.cols_key}={c}" if table.cols_key else table.metric for c in table.cols]
    head += ["train samples/s", "trainable params"]
    lines = [f"**{table.metric}**: mean ± std [95 % CI] (n); best per column in bold; p-values: paired t-test / "
             f"Wilcoxon against `{table.baseline}` over matching seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.rows:
        row = [str(r)]
        for c in table.cols:
            cell = table.cells.get((r, c))
            if cell is None:
                row.append("–")
                continue
            lo, hi = cell.ci95()
            text = f"{cell.mean:.4f} ± {cell.std:.4f} [{lo:.4f}, {hi:.4f}] ({cell.n})"
            if (r, c) in table.pvalues:
                p_t, p_w = table.pvalues[(r, c)]
                text += f" p={_fmt_p(p_t)}/{_fmt_p(p_w)}"
            row.append(f"**{text}**" if best[c] == r else text)
        ex = table.extras.get(r, {})
        row += [f"{ex[THROUGHPUT]:.0f}" if THROUGHPUT in ex else "–",
                f"{ex[TRAINABLE]:,.0f}" if TRAINABLE in ex else "–"]
        lines.append("| " + " | ".join(row) + " |")
    if table.missing:
        lines += ["", f"Incomplete study: {table.missing} cell(s) missing."]
    return "\n".join(lines) + "\n"


def csv_rows(table: Table) -> list[dict[str, Any]]:
    out = []
    for (r, c), cell in sorted(table.cells.items(), key=lambda kv: (_sort_key(kv[0][0]), _sort_key(kv[0][1]))):
        lo, hi = cell.ci95()
        p_t, p_w = table.pvalues.get((r, c), (float("nan"), float("nan")))
        out.append({"row": r, "col": c, "metric": table.metric, "mean": cell.mean, "std": cell.std, "ci_low": lo,
                    "ci_high": hi, "n": cell.n, "p_ttest": p_t, "p_wilcoxon": p_w, "baseline": table.baseline,
                    "train_samples_per_sec": table.extras.get(r, {}).get(THROUGHPUT),
                    "trainable_params": table.extras.get(r, {}).get(TRAINABLE)})
    return out


def to_latex(table: Table) -> str:
    best = _best_rows(table)
    cols = "l" + "c" * len(table.cols)
    esc = lambda s: str(s).replace("_", r"\_")  # noqa: E731
    lines = [r"\begin{tabular}{" + cols + "}", r"\toprule",
             " & ".join([esc(table.rows_key or "")] + [esc(c) for c in table.cols]) + r" \\", r"\midrule"]
    for r in table.rows:
        row = [esc(r)]
        for c in table.cols:
            cell = table.cells.get((r, c))
            text = "--" if cell is None else f"{cell.mean:.3f} $\\pm$ {cell.std:.3f}"
            row.append(rf"\textbf{{{text}}}" if cell is not None and best[c] == r else text)
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(table: Table, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(to_markdown(table))
    (out / "results.tex").write_text(to_latex(table))
    rows = csv_rows(table)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return [out / "results.md", out / "results.csv", out / "results.tex"]


def run_report(name: str, url: str, out: Path, metric: str = "test/acc", rows: str | None = None,
               cols: str | None = None, baseline: str | None = None) -> tuple[Table, list[Path]]:
    """Tables and plots of study `name` into `out`; also logged to a W&B summary run when tracking is on."""
    from tl_research.plots import curve_plot, pareto_plot, search_plots
    from tl_research.study import load_existing, open_storage

    study, spec = load_existing(name, open_storage(url))
    trials = completed_trials(study)
    if not trials:
        raise UserError(f"report: study {name!r} has no completed trial yet")
    d_rows, d_cols = default_axes(trials)
    rows = rows or d_rows
    cols = cols if cols is not None else (d_cols if d_cols != rows else None)
    expected = len(spec.cells) if spec.config.kind == "grid" else None
    table = build_table(trials, metric, rows, cols or None, baseline, expected)
    files = write_tables(table, out)
    files += [p for p in (curve_plot(table, out), pareto_plot(trials, metric, rows, out)) if p]
    if spec.config.kind == "search" and len(spec.objectives) == 1:
        files += search_plots(study, out)
    _log_to_wandb(spec, table, files, out)
    return table, files


def _log_to_wandb(spec: Any, table: Table, files: list[Path], out: Path) -> None:
    from tl_research.config import load_experiment
    from tl_research.tracking import log_summary_run

    rows = csv_rows(table)
    log_summary_run(load_experiment(data=spec.base), spec.name, "report", out, lambda wandb: {
        "report/table": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
        **{f"report/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"}})
