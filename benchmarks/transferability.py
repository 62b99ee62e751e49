"""Validation of the transferability scores against this project's own fine-tuning.

Ground truth: the fine-tuned test accuracy of every candidate (backbone x freeze depth k, pretrained and at random
initialisation) from the studies in benchmarks/transferability/ (one storage; a rerun resumes). Scores: `tlr
rank` on the same data and depths (features of the first k groups). Per dataset and score: Kendall's tau,
weighted tau and top-1 regret with bootstrap intervals over candidates (tl_research/agreement.py).

    python benchmarks/transferability.py                  # full run -> benchmarks/results/transferability.md
    python benchmarks/transferability.py --smoke --out DIR  # a reduced run (tests)
    python benchmarks/transferability.py --rejudge          # the by-question table again, from the committed
                                                            # per-candidate table (its scores at 4 digits)
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tl_research.reports.tables import completed_trials
from tl_research.scores.agreement import agreement, measures
from tl_research.scores.rank import rank
from tl_research.scores.registry import score_names
from tl_research.studies.study import run_study
from tl_research.studies.studyspec import load_study

FOLDER = Path(__file__).parent / "transferability"
STUDIES = ["images.yaml", "images_random.yaml", "text.yaml"]
BACKBONES = ["timm/mobilenetv2_100", "timm/tf_efficientnet_lite0"]  # the smoke run's (the full run: images.yaml)
SMOKE = ["data.train_limit=60", "data.eval_limit=40", "trainer.max_epochs=1"]
SMOKE_BY_MODALITY = {"images": ["data.image_size=32"], "text": ["backbone.max_length=24"]}  # each its own options


def truth(spec: Any, study: Any) -> dict[tuple, tuple[float, Any]]:
    """(dataset, backbone, weights, depth) -> (fine-tuned test accuracy, the cell's experiment) of every finished
    cell."""
    out = {}
    for t in completed_trials(study):
        exp = spec.experiment_for(t.params)
        key = (exp.data.name, exp.backbone.name, exp.backbone.weights, exp.freeze.options.depth)
        out[key] = (t.user_attrs["test/acc"], exp)
    return out


def scored(cells: dict[tuple, tuple[float, Any]], per_class: int) -> dict[tuple, dict[str, float]]:
    """The rank scores of every candidate in `cells`, on the data settings of its own cells."""
    out: dict[tuple, dict[str, float]] = {}
    groups: dict[tuple, list[tuple]] = {}
    for key in cells:
        groups.setdefault((key[0], key[2]), []).append(key)
    for (dataset, weights), keys in sorted(groups.items()):
        exp = cells[keys[0]][1]
        torch.manual_seed(0)  # random-initialisation candidates: one fixed draw per backbone
        for cand in rank(exp, sorted({k[1] for k in keys}), sorted({k[3] for k in keys}), per_class):
            out[(dataset, cand.backbone, weights, cand.depth)] = cand.scores
    return out


def evaluate(cells: dict[tuple, float], scores: dict[tuple, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per dataset x score: tau, weighted tau, regret with intervals."""
    rows = []
    for dataset in sorted({k[0] for k in cells}):
        keys = [k for k in cells if k[0] == dataset and k in scores]
        acc = np.array([cells[k] for k in keys])
        for name in score_names():
            vals = np.array([scores[k].get(name, np.nan) for k in keys])
            if np.isnan(vals).sum() > len(vals) - 3:
                continue  # LEEP / NCE need a source classifier: not every candidate has one
            a = agreement(vals, acc)
            rows.append({"dataset": dataset, "score": name, "candidates": a.n, "tau": a.tau, "tau_lo": a.tau_ci[0],
                         "tau_hi": a.tau_ci[1], "wtau": a.wtau, "wtau_lo": a.wtau_ci[0], "wtau_hi": a.wtau_ci[1],
                         "regret": a.regret, "regret_lo": a.regret_ci[0], "regret_hi": a.regret_ci[1],
                         "best_acc": float(acc.max())})
    return rows


# the two choices a user makes, asked separately: candidates grouped by what stays fixed (key indices:
# dataset, backbone, weights, depth), and whether random-init candidates take part. A group of backbones at one depth
# holds the random-init control, which every feature score ranks last and fine-tuning mostly does too: the
# pretrained-only question asks what a user choosing among pretrained backbones gets
QUESTIONS = {"which backbone, at a fixed depth": ((0, 3), True),
             "which pretrained backbone, at a fixed depth": ((0, 3), False),
             "which depth, for a fixed backbone": ((0, 1, 2), True)}


def by_question(cells: dict[tuple, float], scores: dict[tuple, dict[str, float]]) -> list[dict[str, Any]]:
    """Per question and score: mean tau over the groups of >= 3 scored candidates (tau is undefined, and left
    out, where fine-tuning tied), how often the score's favourite is the group's best, and the mean regret. A
    score that is the same for every candidate of a group (LEEP and NCE across depths) cannot choose there: it
    has no row."""
    rows = []
    for question, (fixed, with_random) in QUESTIONS.items():
        groups: dict[tuple, list[tuple]] = {}
        for key in cells:
            if key in scores and (with_random or key[2] != "none"):
                groups.setdefault(tuple(key[i] for i in fixed), []).append(key)
        for name in score_names():
            found = []
            for keys in groups.values():
                vals = np.array([scores[k].get(name, np.nan) for k in keys])
                acc = np.array([cells[k] for k in keys])
                keep = ~np.isnan(vals)
                if keep.sum() >= 3 and len(np.unique(vals[keep])) > 1:
                    found.append(measures(vals[keep], acc[keep]))
            if found:
                arr = np.array(found)
                rows.append({"question": question, "score": name, "groups": len(found),
                             "tau": float(np.nanmean(arr[:, 0])), "hits": int((arr[:, 2] == 0).sum()),
                             "regret": float(arr[:, 2].mean())})
    return rows


def to_markdown(rows: list[dict[str, Any]], cells: dict[tuple, float], scores: dict[tuple, dict[str, float]],
                command: str) -> str:
    lines = ["# Transferability scores vs fine-tuning", "", f"Command: `{command}`. Candidates: backbone x freeze "
             "depth k (pretrained and random-init), ground truth = fine-tuned test accuracy with groups [0, k) "
             "frozen; scores from `tlr rank` on the features of the first k groups. Intervals: 95 % percentile "
             "bootstrap over candidates.", "",
             "| dataset | score | n | Kendall τ [95 % CI] | weighted τ [95 % CI] | top-1 regret [95 % CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['score']} | {r['candidates']} | {r['tau']:+.2f} [{r['tau_lo']:+.2f}, "
                     f"{r['tau_hi']:+.2f}] | {r['wtau']:+.2f} [{r['wtau_lo']:+.2f}, {r['wtau_hi']:+.2f}] | "
                     f"{r['regret']:.3f} [{r['regret_lo']:.3f}, {r['regret_hi']:.3f}] |")
    lines += ["", "Mean over datasets:", "", "| score | Kendall τ | weighted τ | top-1 regret |", "|---|---|---|---|"]
    for name in score_names():
        mine = [r for r in rows if r["score"] == name]
        if mine:
            lines.append(f"| {name} | {np.mean([r['tau'] for r in mine]):+.2f} | "
                         f"{np.mean([r['wtau'] for r in mine]):+.2f} | {np.mean([r['regret'] for r in mine]):.3f} |")
    lines += ["", "By question (groups of candidates that differ only in the backbone, or only in the depth; "
              "mean over groups):", "", "| question | score | groups | mean Kendall τ | picks the best | mean regret |",
              "|---|---|---|---|---|---|"]
    for r in by_question(cells, scores):
        lines.append(f"| {r['question']} | {r['score']} | {r['groups']} | {r['tau']:+.2f} | "
                     f"{r['hits']}/{r['groups']} | {r['regret']:.3f} |")
    lines += ["", "Every candidate (test accuracy after fine-tuning, then the scores):", "",
              "| dataset | backbone | weights | depth | test acc | " + " | ".join(score_names()) + " |",
              "|" + "---|" * (5 + len(score_names()))]
    for key in sorted(cells):
        s = scores.get(key, {})
        vals = " | ".join("–" if np.isnan(s.get(n, np.nan)) else f"{s[n]:.4g}" for n in score_names())
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cells[key]:.4f} | {vals} |")
    return "\n".join(lines) + "\n"


def from_table(text: str) -> tuple[dict[tuple, float], dict[tuple, dict[str, float]]]:
    """Candidates and scores back from a results file's per-candidate table."""
    lines = text.split("Every candidate")[1].splitlines()
    head = [c.strip() for c in next(line for line in lines if line.startswith("| dataset")).strip("|").split("|")]
    cells: dict[tuple, float] = {}
    scores: dict[tuple, dict[str, float]] = {}
    for line in lines:
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(row) != len(head) or row[0] in ("dataset", "---"):
            continue
        key = (row[0], row[1], row[2], int(row[3]))
        cells[key] = float(row[4])
        scores[key] = {n: float("nan") if v == "–" else float(v) for n, v in zip(head[5:], row[5:])}
    return cells, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="a reduced run (tiny data, one epoch)")
    parser.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--rejudge", action="store_true", help="recompute the tables from the committed results "
                        "file's per-candidate table (no training, no scoring)")
    args = parser.parse_args(argv)
    out = Path(args.out or "benchmarks/results")
    if args.rejudge:
        text = (out / "transferability.md").read_text()
        command = text.split("Command: `")[1].split("`")[0]
        cells, scores = from_table(text)
        updated = to_markdown(evaluate(cells, scores), cells, scores, command)
        by_question = lambda t: t.split("By question")[1].split("Every candidate")[0]  # noqa: E731
        (out / "transferability.md").write_text(text.replace(by_question(text), by_question(updated)))
        print(by_question(updated))
        return 0
    work = out if args.smoke else Path("runs") / "benchmarks" / "transferability"
    work.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{work / 'studies.db'}"
    sets = [*SMOKE, f"output_dir={work / 'runs'}", "tracking.mode=disabled"] if args.smoke else []
    changes = {"grid": {"data.name": ["digits"], "backbone.name": BACKBONES[:2]}} if args.smoke else None
    cells: dict[tuple, float] = {}
    scores: dict[tuple, dict[str, float]] = {}
    for name in STUDIES:
        own = [s for kind, extra in SMOKE_BY_MODALITY.items() if kind in name for s in extra] if args.smoke else []
        spec = load_study(FOLDER / name, [*sets, *own], changes)
        found = truth(spec, run_study(spec, url))
        cells.update({k: acc for k, (acc, _) in found.items()})
        scores.update(scored(found, 10 if args.smoke else (500 if "text" in name else 100)))
    rows = evaluate(cells, scores)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/transferability.py" + (" --smoke" if args.smoke else "")
    (out / "transferability.md").write_text(to_markdown(rows, cells, scores, command))
    with (out / "transferability.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'transferability.md'} and {out / 'transferability.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
