"""Reports of a study: tables (md/csv/tex) and plots into a folder, logged to a W&B summary run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tl_research.errors import UserError
from tl_research.reports.plots import curve_plot, pareto_plot, search_plots
from tl_research.reports.tables import (  # noqa: F401  (Table, build_table: used by callers of this module)
    THROUGHPUT,
    TRAINABLE,
    Table,
    build_table,
    completed_trials,
    default_axes,
    sort_key,
)
from tl_research.runs.tracking import log_summary_run
from tl_research.studies import prefilter
from tl_research.studies.storage import open_storage
from tl_research.studies.study import load_existing

METHODS = {"bootstrap": "bootstrap over seeds and test examples", "seeds-bootstrap": "bootstrap over seeds",
           "wilson": "Wilson interval of the single run", "t": "Student-t over seeds", "none": "no interval"}


def _fmt_p(p: float) -> str:
    return "–" if p != p else f"{p:.3g}"


def _methods(table: Table) -> str:
    used = dict.fromkeys(c.interval.method for c in table.cells.values() if c.interval is not None)
    return "; ".join(METHODS[m] for m in used)


def _cell_text(table: Table, key: tuple[Any, Any]) -> str:
    cell = table.cells[key]
    iv = cell.interval
    text = f"{cell.mean:.4f} ± {cell.std:.4f}" + (f" [{iv.low:.4f}, {iv.high:.4f}]" if iv and iv.method != "none"
                                                  else "") + f" ({cell.n})"
    if table.best.get(key[1]) == key[0]:
        return f"**{text}**"
    return text + (" †" if key in table.tied else "")


def _p_text(table: Table, key: tuple[Any, Any]) -> str:
    comp = table.vs_baseline[key]
    if not table.reachable[key]:
        return "p: –ⁿ"
    return f"p={_fmt_p(comp.p)}, Holm {_fmt_p(table.p_baseline_holm[key])}"


def footnote(table: Table) -> str:
    """Test, correction and alpha in one line."""
    return (f"Paired tests over matching seeds on the same test examples: exact sign-flip permutation test "
            f"(McNemar's exact test with one seed), Holm–Bonferroni over the comparisons of this table, "
            f"α = {table.alpha:g}. **bold**: best mean per column; †: not significantly worse than it; –ⁿ: with n "
            f"seeds the exact test cannot reach p < α after Holm over {len(table.vs_baseline)} comparisons "
            f"(its smallest p is 2/2ⁿ).")


def to_markdown(table: Table, target_width: float | None = 0.02) -> str:
    head = [f"{table.rows_key or ''} \\ {table.cols_key}" if table.cols_key else (table.rows_key or "")]
    head += [f"{table.cols_key}={c}" if table.cols_key else table.metric for c in table.cols]
    lines = [f"**{table.metric}**: mean ± std [95 % interval: {_methods(table)}] (n seeds).", "",
             "| " + " | ".join(head + ["train samples/s", "trainable params"]) + " |", "|" + "---|" * (len(head) + 2)]
    for r in table.rows:
        row = [str(r)] + [_cell_text(table, (r, c)) if (r, c) in table.cells else "–" for c in table.cols]
        ex = table.extras.get(r, {})
        row += [f"{ex[THROUGHPUT]:.0f}" if THROUGHPUT in ex else "–",
                f"{ex[TRAINABLE]:,.0f}" if TRAINABLE in ex else "–"]
        lines.append("| " + " | ".join(row) + " |")
    if table.vs_baseline:
        lines += ["", f"Difference to `{table.baseline}` (same seeds, same test examples): mean [95 % interval], "
                      f"p raw and Holm-adjusted.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in table.rows:
            if r == table.baseline:
                continue
            row = [str(r)]
            for c in table.cols:
                comp = table.vs_baseline.get((r, c))
                row.append("–" if comp is None else f"{comp.diff:+.4f} [{comp.interval.low:+.4f}, "
                           f"{comp.interval.high:+.4f}] {_p_text(table, (r, c))}")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", footnote(table)]
    if target_width is not None:
        wide = table.seeds_needed(target_width)
        if wide:
            notes = ", ".join(f"{r}/{c}: {'≥ 2 (one seed so far)' if n is None else n}"
                              for (r, c), n in sorted(wide.items(), key=lambda kv: (sort_key(kv[0][0]),
                                                                                    sort_key(kv[0][1]))))
            lines += ["", f"Intervals wider than {target_width:g}: {len(wide)} cell(s); seeds estimated for that width "
                          f"from the seed variance: {notes}."]
    if table.missing:
        lines += ["", f"Incomplete study: {table.missing} cell(s) missing."]
    return "\n".join(lines) + "\n"


def csv_rows(table: Table, target_width: float = 0.02) -> list[dict[str, Any]]:
    nan = float("nan")
    wide = table.seeds_needed(target_width)
    out = []
    for (r, c), cell in sorted(table.cells.items(), key=lambda kv: (sort_key(kv[0][0]), sort_key(kv[0][1]))):
        iv, comp = cell.interval, table.vs_baseline.get((r, c))
        out.append({"row": r, "col": c, "metric": table.metric, "mean": cell.mean, "std": cell.std,
                    "ci_low": iv.low if iv else nan, "ci_high": iv.high if iv else nan,
                    "ci_method": iv.method if iv else "none", "n": cell.n, "baseline": table.baseline,
                    "diff": comp.diff if comp else nan, "diff_low": comp.interval.low if comp else nan,
                    "diff_high": comp.interval.high if comp else nan, "test": comp.test if comp else None,
                    "p": comp.p if comp else nan, "p_holm": table.p_baseline_holm.get((r, c), nan),
                    "p_wilcoxon": comp.p_wilcoxon if comp else nan,
                    "test_can_reach_alpha": table.reachable[(r, c)] if comp else None,
                    "best": table.best.get(c) == r, "tied_with_best": (r, c) in table.tied,
                    "p_vs_best_holm": table.p_best_holm.get((r, c), nan),
                    "seeds_for_target_width": wide.get((r, c)),
                    "train_samples_per_sec": table.extras.get(r, {}).get(THROUGHPUT),
                    "trainable_params": table.extras.get(r, {}).get(TRAINABLE)})
    return out


def to_latex(table: Table) -> str:
    cols = "l" + "c" * len(table.cols)
    esc = lambda s: str(s).replace("_", r"\_")  # noqa: E731
    lines = [r"\begin{tabular}{" + cols + "}", r"\toprule",
             " & ".join([esc(table.rows_key or "")] + [esc(c) for c in table.cols]) + r" \\", r"\midrule"]
    for r in table.rows:
        row = [esc(r)]
        for c in table.cols:
            cell = table.cells.get((r, c))
            if cell is None:
                row.append("--")
                continue
            iv = cell.interval
            text = f"{cell.mean:.3f}" + (f" [{iv.low:.3f}, {iv.high:.3f}]" if iv and iv.method != "none" else "")
            text += f" ({cell.n})"
            if table.best.get(c) == r:
                text = rf"\textbf{{{text}}}"
            elif (r, c) in table.tied:
                text += r"$^\dagger$"
            row.append(text)
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              "% " + f"{esc(table.metric)}: mean [95 % interval: {_methods(table)}] (n seeds). " + footnote(table)]
    return "\n".join(lines) + "\n"


def write_tables(table: Table, out: Path, target_width: float = 0.02) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(to_markdown(table, target_width))
    (out / "results.tex").write_text(to_latex(table))
    write_csv(out / "results.csv", csv_rows(table, target_width))
    return [out / "results.md", out / "results.csv", out / "results.tex"]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of one shape as a CSV with a header (the first row's keys)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_report(name: str, url: str, out: Path, metric: str = "test/acc", rows: str | None = None,
               cols: str | None = None, baseline: str | None = None, method: str = "bootstrap",
               target_width: float = 0.02) -> tuple[Table, list[Path]]:
    """Tables and plots of study `name` into `out`; also logged to a W&B summary run when tracking is on."""
    study, spec = load_existing(name, open_storage(url, must_exist=True), "name")
    trials = completed_trials(study)
    if not trials:
        raise UserError(f"report: study {name!r} has no completed trial yet")
    record = prefilter.apply(spec, study)  # expected cells: only the kept candidates'
    d_rows, d_cols = default_axes(trials)
    rows = rows or d_rows
    cols = cols if cols is not None else (d_cols if d_cols != rows else None)
    expected = len(spec.cells) if spec.config.kind == "grid" else None
    table = build_table(trials, metric, rows, cols or None, baseline, expected, method)
    files = write_tables(table, out, target_width)
    if record is not None:
        (out / "prefilter.md").write_text(prefilter.to_markdown(record))
        files.append(out / "prefilter.md")
    files += [p for p in (curve_plot(table, out), pareto_plot(trials, metric, rows, out)) if p]
    if spec.config.kind == "search" and len(spec.objectives) == 1:
        files += search_plots(study, out)
    _log_to_wandb(spec, table, files, out, target_width)
    return table, files


def curve_series(table: Table) -> dict[str, tuple[list[Any], list[float]]]:
    """Per row: x values and means, plus the interval bounds as their own series (`row (low)`, `row (high)`)."""
    series: dict[str, tuple[list[Any], list[float]]] = {}
    for r in table.rows:
        xs = [c for c in table.cols if (r, c) in table.cells]
        cells = [table.cells[(r, c)] for c in xs]
        series[str(r)] = (xs, [c.mean for c in cells])
        if all(c.interval is not None and c.interval.method != "none" for c in cells):
            series[f"{r} (low)"] = (xs, [c.interval.low for c in cells])
            series[f"{r} (high)"] = (xs, [c.interval.high for c in cells])
    return series


def _log_to_wandb(spec: Any, table: Table, files: list[Path], out: Path, target_width: float) -> None:
    rows = csv_rows(table, target_width)

    def payload(wandb: Any) -> dict[str, Any]:
        logged = {"report/table": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
                  **{f"report/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"}}
        numeric = table.cols_key is not None and all(isinstance(c, (int, float)) for c in table.cols)
        if numeric:  # the few-shot / freeze-depth curve as a native W&B line plot, intervals as their own lines
            series = curve_series(table)
            xs = [float(c) for c in table.cols]
            ys = [[dict(zip(sx, sy)).get(c, float("nan")) for c in table.cols] for sx, sy in series.values()]
            name = table.cols_key.replace(".", "_")
            logged[f"report/curve_{name}"] = wandb.plot.line_series(
                xs=xs, ys=ys, keys=list(series), title=f"{table.metric} vs {table.cols_key}", xname=table.cols_key)
        return logged

    log_summary_run(spec.experiment, spec.name, "report", out, payload)
