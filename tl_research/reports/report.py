"""Reports of a study: tables (md/csv/tex) and plots into a folder, logged to a W&B summary run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna

from tl_research import stats
from tl_research.errors import UserError
from tl_research.reports import predictions, suite_table, tuning
from tl_research.reports.plots import ReportData, draw_all
from tl_research.reports.tables import (  # noqa: F401  (Table, build_table: used by callers of this module)
    THROUGHPUT,
    TRAINABLE,
    Table,
    build_table,
    completed_trials,
    default_axes,
    sort_key,
)
from tl_research.runtime.tracking import log_summary_run
from tl_research.studies import prefilter, suites
from tl_research.studies.kinds import kind_of
from tl_research.studies.storage import open_storage
from tl_research.studies.study import load_existing

METHODS = {"crossed-t": "crossed seeds × test examples, t with Satterthwaite df",
           "seeds-t": "t over seeds only, no per-example predictions: leaves out the test-set term",
           "wilson-one-seed": "Wilson interval of the single run", "none": "no interval"}


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
    return text + ("" if table.worse(key) else " †")


def _diff_text(comp: stats.Comparison) -> str:
    if comp.interval.method == "none":
        return f"{comp.diff:+.4f} (one seed, no predictions: no test)"
    return f"{comp.diff:+.4f} [{comp.interval.low:+.4f}, {comp.interval.high:+.4f}] p={_fmt_p(comp.p)}"


def footnote(table: Table) -> str:
    """The decision rule, its family and alpha in one line."""
    return (f"Differences pair matching seeds (and the same test examples where both rows left per-example "
            f"predictions): the difference to `{table.baseline}` ({len(table.vs_baseline)} comparisons) and to each "
            f"column's best row ({len(table.vs_best)} comparisons) are each one family of simultaneous intervals at "
            f"the Bonferroni level (1 − α/k, α = {table.alpha:g}); p = min(1, k·p) from the t test of the same "
            f"statistic, so p < α exactly when the interval excludes 0. **bold**: best mean per column; †: not "
            f"separable from it (its interval to the best contains 0); unmarked rows are worse than the best.")


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
        lines += ["", f"Difference to `{table.baseline}`: mean [simultaneous interval], family-adjusted p.", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in table.rows:
            if r == table.baseline:
                continue
            row = [str(r)]
            for c in table.cols:
                comp = table.vs_baseline.get((r, c))
                row.append("–" if comp is None else _diff_text(comp))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", footnote(table)]
    if target_width is not None:
        wide = table.seeds_needed(target_width)
        if wide:
            notes = ", ".join(f"{r}/{c}: {_seeds_text(table, (r, c), n)}"
                              for (r, c), n in sorted(wide.items(), key=lambda kv: (sort_key(kv[0][0]),
                                                                                    sort_key(kv[0][1]))))
            lines += ["", f"Intervals wider than {target_width:g}: {len(wide)} cell(s); seeds estimated for that width "
                          f"from the cell's variance components at its test size: {notes}."]
    flagged = [(key, cell) for key, cell in table.cells.items() if cell.at_chance]
    if flagged:
        cells = ", ".join(f"{r}{f'/{c}' if table.cols_key else ''}: {cell.at_chance} of {cell.n}" for (r, c), cell in
                          sorted(flagged, key=lambda kv: (sort_key(kv[0][0]), sort_key(kv[0][1]))))
        lines += ["", f"⚠ Runs that learned nothing (test accuracy not above chance, training loss not below 90 % of "
                      f"its start — a failed fit, e.g. an lr too high; check before reading the row): {cells}."]
    if table.missing:
        lines += ["", f"Incomplete study: {table.missing} cell(s) missing."]
    return "\n".join(lines) + "\n"


def _seeds_text(table: Table, key: tuple[Any, Any], n: int | None) -> str:
    if n is not None:
        return str(n)
    return "≥ 2 (one seed so far)" if table.cells[key].n < 2 else "none suffice (the test set is too small)"


def csv_rows(table: Table, target_width: float = 0.02) -> list[dict[str, Any]]:
    nan = float("nan")
    wide = table.seeds_needed(target_width)
    out = []
    for (r, c), cell in sorted(table.cells.items(), key=lambda kv: (sort_key(kv[0][0]), sort_key(kv[0][1]))):
        iv, comp, best = cell.interval, table.vs_baseline.get((r, c)), table.vs_best.get((r, c))
        out.append({"row": r, "col": c, "metric": table.metric, "mean": cell.mean, "std": cell.std,
                    "ci_low": iv.low if iv else nan, "ci_high": iv.high if iv else nan,
                    "ci_method": iv.method if iv else "none", "n": cell.n, "baseline": table.baseline,
                    "diff": comp.diff if comp else nan, "diff_low": comp.interval.low if comp else nan,
                    "diff_high": comp.interval.high if comp else nan, "test": comp.test if comp else None,
                    "p_adjusted": comp.p if comp else nan, "best": table.best.get(c) == r,
                    "worse_than_best": table.worse((r, c)),
                    "diff_to_best_low": best.interval.low if best else nan,
                    "diff_to_best_high": best.interval.high if best else nan,
                    "p_vs_best_adjusted": best.p if best else nan,
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
            elif not table.worse((r, c)):
                text += r"$^\dagger$"
            row.append(text)
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              "% " + f"{esc(table.metric)}: mean [95 % interval: {_methods(table)}] (n seeds). " + footnote(table)]
    return "\n".join(lines) + "\n"


def write_tables(table: Table, out: Path, target_width: float = 0.02,
                 suite: suite_table.SuiteMeans | None = None) -> list[Path]:
    """results.md / .csv / .tex of `table`; a suite study's mean-over-tasks columns below the markdown table and as
    `mean:<group>` rows of the CSV."""
    out.mkdir(parents=True, exist_ok=True)
    rows = csv_rows(table, target_width)
    md = to_markdown(table, target_width)
    if suite is not None:
        md += suite_table.to_markdown(table, suite)
        rows += suite_table.csv_rows(table, suite, rows[0])
    (out / "results.md").write_text(md)
    (out / "results.tex").write_text(to_latex(table))
    write_csv(out / "results.csv", rows)
    return [out / "results.md", out / "results.csv", out / "results.tex"]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of one shape as a CSV with a header (the first row's keys)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_report(name: str, url: str | optuna.storages.BaseStorage, out: Path, metric: str = "test/acc",
               rows: str | None = None, cols: str | None = None, baseline: str | None = None,
               target_width: float = 0.02,
               lookup: predictions.Lookup = predictions.from_run_folder, track: bool = True,
               wandb_dir: Path | None = None) -> tuple[Table, list[Path]]:
    """Tables and plots of study `name` (in storage `url`, a URL or an open storage) into `out`; also logged to a
    W&B summary run when `track` and the study's tracking is on, its files in `wandb_dir` (default `out`).
    `lookup`: where trials keep their predictions."""
    storage = open_storage(url, must_exist=True) if isinstance(url, str) else url
    study, spec = load_existing(name, storage, "name")
    trials = completed_trials(study)
    if not trials:
        raise UserError(f"report: study {name!r} has no completed trial yet")
    record = prefilter.apply(spec, study)  # expected cells: only the kept candidates'
    d_rows, d_cols = default_axes(trials)
    if spec.suite is not None:  # a suite study: tasks are the columns, the mean over them is added
        d_cols = suites.TASK
        d_rows = d_rows if d_rows != suites.TASK else next(
            (k for k in spec.config.grid if k not in (suites.TASK, "seed")), None)
    rows = rows or d_rows
    cols = cols if cols is not None else (d_cols if d_cols != rows else None)
    table = build_table(trials, metric, rows, cols or None, baseline, kind_of(spec).expected(spec), lookup=lookup)
    means = (suite_table.build(table, suites.groups(spec.suite, table.cols))
             if spec.suite is not None and table.cols_key == suites.TASK else None)
    files = write_tables(table, out, target_width, means)
    if record is not None:
        (out / "prefilter.md").write_text(prefilter.to_markdown(record))
        files.append(out / "prefilter.md")
    chosen = tuning.summary(study, spec)  # one row per arm: none outside a tuned study
    if chosen:
        (out / "tuning.md").write_text(tuning.to_markdown(chosen, spec))
        files.append(out / "tuning.md")
    files += draw_all(ReportData(study, spec, trials, table), out)
    if track:
        _log_to_wandb(spec, table, files, wandb_dir or out, target_width, chosen)
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


def _log_to_wandb(spec: Any, table: Table, files: list[Path], out: Path, target_width: float,
                  chosen: list[dict[str, Any]]) -> None:
    rows = csv_rows(table, target_width)

    def payload(wandb: Any) -> dict[str, Any]:
        logged = {"report/table": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
                  **{f"report/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"}}
        if chosen:  # a tuned study: each arm's budget and chosen setting
            columns = list(chosen[0])
            logged["report/tuning"] = wandb.Table(columns=columns, data=[[json.dumps(r[c]) if isinstance(
                r[c], (dict, list)) else r[c] for c in columns] for r in chosen])
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
