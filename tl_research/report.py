"""Reports of a study: tables (md/csv/tex) and plots into a folder, logged to a W&B summary run."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from tl_research.errors import UserError
from tl_research.tables import (  # noqa: F401  (Table, build_table: used by callers of this module)
    THROUGHPUT,
    TRAINABLE,
    Table,
    build_table,
    completed_trials,
    default_axes,
    sort_key,
)


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
    for (r, c), cell in sorted(table.cells.items(), key=lambda kv: (sort_key(kv[0][0]), sort_key(kv[0][1]))):
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
    from tl_research.tracking import log_summary_run

    rows = csv_rows(table)
    log_summary_run(spec.experiment, spec.name, "report", out, lambda wandb: {
        "report/table": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
        **{f"report/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"}})
