"""PNG plots of a study: accuracy curves with CI bands, accuracy vs throughput with its Pareto front, and the
optimisation history / parameter importances of searches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # optuna draws through pyplot: release its figure
import optuna
from matplotlib.figure import Figure
from optuna.visualization import matplotlib as ovm

from tl_research.reports.tables import THROUGHPUT, Table

NAMES = {"data.shots": ("few_shot.png", "examples per class (log scale)"),
         "freeze.depth": ("freeze_depth.png", "frozen layer groups (freeze depth k)")}


def curve_plot(table: Table, out: Path) -> Path | None:
    """Metric vs the numeric column key, one line + 95 % CI band per row."""
    if table.cols_key is None or not all(isinstance(c, (int, float)) for c in table.cols):
        return None
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
    return out / name


def pareto_plot(trials: list[optuna.trial.FrozenTrial], metric: str, rows_key: str | None, out: Path) -> Path | None:
    """Each trial's metric against its training throughput; the non-dominated trials joined as the front."""
    points = [(t.user_attrs[THROUGHPUT], t.user_attrs[metric], t.params.get(rows_key) if rows_key else "trials")
              for t in trials
              if THROUGHPUT in t.user_attrs and metric in t.user_attrs]
    if not points:
        return None
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
    return out / "accuracy_vs_throughput.png"


def search_plots(study: optuna.Study, out: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances (single-objective searches)."""
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
