"""PNG plots of a study, each one function `(ReportData, out) -> [files]` registered with `@register_plot(name)`
(a plugin adds its own the same way; `tlr report` draws every registered plot, each deciding whether it applies):
accuracy curves with CI bands, accuracy vs throughput with its Pareto front, the optimisation history / parameter
importances of searches, and (tuning.py) a tuned study's sensitivity to its tuned parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # optuna draws through pyplot: release its figure
import optuna
from matplotlib.figure import Figure
from optuna.visualization import matplotlib as ovm

from tl_research.registry import Registry
from tl_research.reports.tables import THROUGHPUT, Table
from tl_research.studies.kinds import kind_of
from tl_research.studies.studyspec import StudySpec


@dataclass(frozen=True)
class ReportData:
    """What a report's plots draw from: the study, its spec, its completed trials and the report's table."""

    study: optuna.Study
    spec: StudySpec
    trials: list[optuna.trial.FrozenTrial]
    table: Table


Plot = Callable[[ReportData, Path], list[Path]]
PLOTS: Registry[Plot] = Registry("report plot")


def register_plot(name: str) -> Callable[[Plot], Plot]:
    """Register a plot `(data, out) -> files written into out` (none where it does not apply to the study)."""
    return PLOTS.register(name)


def draw_all(data: ReportData, out: Path) -> list[Path]:
    """Every registered plot of `data` into `out`."""
    return [f for _, plot in PLOTS.items() for f in plot(data, out)]

NAMES = {"data.shots": ("few_shot.png", "examples per class (log scale)"),
         "freeze.depth": ("freeze_depth.png", "frozen layer groups (freeze depth k)")}


@register_plot("curve")
def curve_plot(data: ReportData, out: Path) -> list[Path]:
    """Metric vs the numeric column key, one line + 95 % CI band per row."""
    table = data.table
    if table.cols_key is None or not all(isinstance(c, (int, float)) for c in table.cols):
        return []
    name, xlabel = NAMES.get(table.cols_key, (f"curve_{table.cols_key.replace('.', '_')}.png", table.cols_key))
    fig = Figure(figsize=(6, 4))  # no pyplot: no global backend, no display needed
    ax = fig.subplots()
    for r in table.rows:
        xs = [c for c in table.cols if (r, c) in table.cells]
        cells = [table.cells[(r, c)] for c in xs]
        ax.plot(xs, [c.mean for c in cells], marker="o", label=str(r))
        if all(c.interval is not None for c in cells):  # the table's own intervals (stats.py): inside [0, 1]
            ax.fill_between(xs, [c.interval.low for c in cells], [c.interval.high for c in cells], alpha=0.15)
    if table.cols_key == "data.shots":
        ax.set_xscale("log", base=2)
        ax.set_xticks(table.cols, [str(c) for c in table.cols])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(table.metric)
    ax.grid(alpha=0.3)
    ax.legend(title=table.rows_key or "")
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    return [out / name]


@register_plot("accuracy_vs_throughput")
def pareto_plot(data: ReportData, out: Path) -> list[Path]:
    """Each trial's metric against its training throughput; the non-dominated trials joined as the front."""
    metric, rows_key = data.table.metric, data.table.rows_key
    points = [(t.user_attrs[THROUGHPUT], t.user_attrs[metric], t.params.get(rows_key) if rows_key else "trials")
              for t in data.trials
              if THROUGHPUT in t.user_attrs and metric in t.user_attrs]
    if not points:
        return []
    front = sorted(p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q[:2] != p[:2] for q in points))
    fig = Figure(figsize=(6, 4))  # no pyplot: no global backend, no display needed
    ax = fig.subplots()
    for label in dict.fromkeys(p[2] for p in points):
        sel = [p for p in points if p[2] == label]
        ax.scatter([p[0] for p in sel], [p[1] for p in sel], label=str(label), alpha=0.7)
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("training samples / s")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_throughput.png", dpi=120)
    return [out / "accuracy_vs_throughput.png"]


@register_plot("search")
def search_plots(data: ReportData, out: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances (single-objective searches)."""
    study, spec = data.study, data.spec
    if not kind_of(spec).SEARCHES or len(spec.objectives) != 1:
        return []
    made = []
    for name, draw in (("optimization_history.png", ovm.plot_optimization_history),
                       ("param_importances.png", ovm.plot_param_importances)):
        try:
            ax: Any = draw(study)
        except (ValueError, RuntimeError):  # too few finished trials for this plot
            continue
        ax.figure.set_size_inches(7, 4)
        ax.figure.tight_layout()
        ax.figure.savefig(out / name, dpi=120)

        plt.close(ax.figure)
        made.append(out / name)
    return made
