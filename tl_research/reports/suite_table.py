"""The mean-over-tasks columns of a suite study's table: per row, the mean of its per-task cell means over each group
of tasks and over all of them, with the `t-over-tasks` interval (stats.tasks_interval: the tasks a sample of tasks,
so the interval carries the between-task variance), and each row's difference to the baseline row paired per task
(one family of simultaneous intervals, Bonferroni, as the per-task table's)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from tl_research import stats
from tl_research.reports.tables import Table, size_key

ALL = "all"


@dataclass
class SuiteMeans:
    columns: dict[str, list[Any]]  # column label (a group, or "all") -> its tasks
    means: dict[tuple[Any, str], tuple[float, stats.Interval]] = field(default_factory=dict)  # (row, column)
    vs_baseline: dict[tuple[Any, str], stats.Comparison] = field(default_factory=dict)


def build(table: Table, groups: dict[str, list[str]], alpha: float = stats.ALPHA) -> SuiteMeans:
    """Means of rows that have a cell for every task of a column; groups of one task are left out (their mean is
    that task's cell)."""
    columns = {g: tasks for g, tasks in groups.items() if len(tasks) > 1 and set(tasks) <= set(table.cols)}
    columns[ALL] = list(table.cols)
    out = SuiteMeans(columns)
    lo, hi = (0.0, 1.0) if size_key(table.metric) else (-math.inf, math.inf)  # an accuracy stays in [0, 1]
    per_task = {r: {c: table.cells[(r, c)].mean for c in table.cols if (r, c) in table.cells} for r in table.rows}
    for r, found in per_task.items():
        for label, tasks in columns.items():
            if all(t in found for t in tasks):
                values = [found[t] for t in tasks]
                out.means[(r, label)] = (sum(values) / len(values), stats.tasks_interval(values, lo=lo, hi=hi))
    pairs = [(r, label) for (r, label) in out.means if r != table.baseline and (table.baseline, label) in out.means]
    family = sum(len(columns[label]) > 1 for _, label in pairs)
    confidence = stats.bonferroni(family, alpha)
    for r, label in pairs:
        tasks = columns[label]
        comp = stats.compare_tasks([per_task[r][t] for t in tasks], [per_task[table.baseline][t] for t in tasks],
                                   confidence)
        out.vs_baseline[(r, label)] = dataclasses.replace(comp, p=stats.adjusted(comp.p, family))
    return out


def _head(suite: SuiteMeans) -> list[str]:
    return [f"mean {label} ({len(tasks)} tasks)" for label, tasks in suite.columns.items()]


def to_markdown(table: Table, suite: SuiteMeans) -> str:
    """The mean columns and their differences to the baseline, as markdown below the per-task table."""
    labels = list(suite.columns)
    lines = ["", "**Mean over tasks** of the per-task means above, [95 % interval: t over tasks — the tasks a sample "
                 "of tasks, T − 1 degrees of freedom].", "",
             "| " + " | ".join([table.rows_key or ""] + _head(suite)) + " |", "|" + "---|" * (len(labels) + 1)]
    for r in table.rows:
        row = [str(r)]
        for label in labels:
            found = suite.means.get((r, label))
            row.append("–" if found is None else f"{found[0]:.4f} [{found[1].low:.4f}, {found[1].high:.4f}]"
                       if found[1].method != "none" else f"{found[0]:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    if suite.vs_baseline:
        lines += ["", f"Difference to `{table.baseline}`, paired per task: mean [simultaneous interval, "
                      f"{len(suite.vs_baseline)} comparisons, Bonferroni], family-adjusted p.", "",
                  "| " + " | ".join([table.rows_key or ""] + _head(suite)) + " |", "|" + "---|" * (len(labels) + 1)]
        for r in table.rows:
            if r == table.baseline:
                continue
            row = [str(r)]
            for label in labels:
                comp = suite.vs_baseline.get((r, label))
                row.append("–" if comp is None else f"{comp.diff:+.4f} [{comp.interval.low:+.4f}, "
                                                    f"{comp.interval.high:+.4f}] p={comp.p:.3g}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(table: Table, suite: SuiteMeans, template: dict[str, Any]) -> list[dict[str, Any]]:
    """The mean cells as rows of the per-task CSV (`template`: one of its rows, for the columns)."""
    nan = float("nan")
    out = []
    for (r, label), (mean, iv) in suite.means.items():
        comp = suite.vs_baseline.get((r, label))
        row = dict.fromkeys(template, None)
        row.update({"row": r, "col": f"mean:{label}", "metric": table.metric, "mean": mean, "std": nan,
                    "ci_low": iv.low, "ci_high": iv.high, "ci_method": iv.method, "n": len(suite.columns[label]),
                    "baseline": table.baseline, "diff": comp.diff if comp else nan,
                    "diff_low": comp.interval.low if comp else nan, "diff_high": comp.interval.high if comp else nan,
                    "test": comp.test if comp else None, "p_adjusted": comp.p if comp else nan})
        out.append(row)
    return out
