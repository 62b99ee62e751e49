"""The tuning section of a tuned study's report: per arm the budget, what became of it, the chosen setting and its
validation score (tuning.md), and the sensitivity plot: the validation metric against each tuned parameter, one
marker set per arm, the chosen setting circled (tuning_sensitivity.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import TrialState

from tl_research.reports.plots import ReportData, register_plot
from tl_research.studies import tuned
from tl_research.studies.studyspec import StudySpec, arm_keys


def summary(study: optuna.Study, spec: StudySpec) -> list[dict[str, Any]]:
    """One row per arm: its tuning budget and outcomes, the chosen trial, setting and validation score."""
    trials = study.get_trials(deepcopy=False)
    rows = []
    for i, arm in enumerate(spec.arms):
        mine = tuned.phase_trials(trials, tuned.TUNE, arm)
        best = tuned.best_trial(trials, spec, arm)
        counts = {s: sum(t.state == s for t in mine) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.FAIL)}
        rows.append({"arm": arm, "budget": spec.tune.trials, "complete": counts[TrialState.COMPLETE],
                     "pruned": counts[TrialState.PRUNED], "failed": counts[TrialState.FAIL],
                     "tuned": spec.tuned[i], "chosen_trial": best.number if best else None,
                     "setting": {k: best.params[k] for k in spec.tuned[i]} if best else None,
                     "score": best.value if best else None})
    return rows


def to_markdown(rows: list[dict[str, Any]], spec: StudySpec) -> str:
    metric = spec.objectives[0].metric
    lines = [f"Tuning: each arm had the same budget of {spec.tune.trials} trials ({spec.tune.sampler} sampler) over "
             f"{', '.join(spec.tune.params)}, judged on {metric} ({spec.directions[0]}; ties: the earliest trial); no "
             f"tuning trial ran the test split. Each arm's chosen setting was re-run with "
             f"{len(tuned.grid_seeds(spec.config))} seeds for the table above.", "",
             f"| arm | complete / pruned / failed | tuned | chosen setting | {metric} |", "|---|---|---|---|---|"]
    for r in rows:
        arm = ", ".join(f"{k}={v}" for k, v in r["arm"].items())
        setting = ("every tuning trial failed: no seed runs" if r["setting"] is None else
                   ", ".join(f"{k}={_fmt(v)}" for k, v in r["setting"].items()) + f" (trial {r['chosen_trial']})")
        score = "–" if r["score"] is None else f"{r['score']:.4f}"
        lines.append(f"| {arm} | {r['complete']} / {r['pruned']} / {r['failed']} | {', '.join(r['tuned'])} "
                     f"| {setting} | {score} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@register_plot("tuning_sensitivity")
def sensitivity_plot(data: ReportData, out: Path) -> list[Path]:
    """The validation metric against each tuned parameter (one panel each), per arm; chosen settings circled."""
    spec = data.spec
    if spec.tune is None:
        return []
    trials = data.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    keys = list(spec.tune.params)
    if not any(tuned.phase_trials(trials, tuned.TUNE, arm) for arm in spec.arms):
        return []
    fig = Figure(figsize=(5 * len(keys), 4))  # no pyplot: no global backend, no display needed
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for arm in spec.arms:
            mine = [t for t in tuned.phase_trials(trials, tuned.TUNE, arm) if key in t.params]
            if not mine:
                continue
            label = ", ".join(str(v) for v in arm.values())
            dots = ax.scatter([t.params[key] for t in mine], [t.value for t in mine], label=label, alpha=0.7)
            best = tuned.best_trial(trials, spec, arm)
            if best is not None and key in best.params:
                ax.scatter([best.params[key]], [best.value], s=160, facecolors="none",
                           edgecolors=dots.get_facecolor()[:1], linewidths=2)
        if spec.tune.params[key].get("log"):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(spec.objectives[0].metric)
        ax.grid(alpha=0.3)
    axes[0].legend(title=", ".join(arm_keys(spec.config)), fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tuning_sensitivity.png", dpi=120)
    return [out / "tuning_sensitivity.png"]
