"""Would pruning have changed a tuned study's choices? Every pruned tuning trial of the named `kind: tuned` studies
is re-run to its last epoch, unpruned, with its exact experiment (same arm, setting, seed and data), and its final
validation value is set beside the value of the setting its arm chose. An arm whose pruned setting ends above its
choice would have been tuned differently without pruning.

A supplementary, post-hoc check of a finished run (it needs that run's storage and any source models it names):
its output is evidence about the tuning protocol, not a registered result. Run where the finding ran, e.g.

    python benchmarks/pruning_check.py sqlite:///runs/reproductions/surgical_tuned/studies.db \\
        surgical2-animal-blocks surgical2-animal-whole --out pruning_check.md
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tl_research.pipeline import run
from tl_research.studies import tuned
from tl_research.studies.storage import open_storage
from tl_research.studies.study import SPEC_ATTR
from tl_research.studies.studyspec import load_study_json


def check(url: str, name: str, scratch: Path) -> list[dict]:
    """One row per pruned tuning trial of study `name`: where it was stopped, where it ends unpruned, and the
    value of its arm's chosen setting."""
    study = optuna.load_study(study_name=name, storage=open_storage(url, must_exist=True))
    spec = load_study_json(study.user_attrs[SPEC_ATTR])
    metric = spec.objectives[0].metric
    sign = 1 if spec.objectives[0].direction == "maximize" else -1
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        if t.state != TrialState.PRUNED or t.user_attrs.get(tuned.PHASE) != tuned.TUNE:
            continue
        chosen = tuned.best_trial(trials, spec, tuned.arm_of(t))
        exp = spec.experiment_for(t.params)
        exp = dataclasses.replace(exp, output_dir=str(scratch),
                                  tracking=dataclasses.replace(exp.tracking, mode="disabled"),
                                  trainer=dataclasses.replace(exp.trainer, progress_bar=False))
        result = run(exp, scratch / f"{name}-{t.number}", test=False)
        final = float(result.metrics[metric])
        rows.append({"study": name, "trial": t.number, "params": t.params, "stopped": max(t.intermediate_values),
                     "at": t.intermediate_values[max(t.intermediate_values)], "final": final,
                     "chosen": chosen.params if chosen else None, "chosen_value": chosen.value if chosen else None,
                     "changes": chosen is not None and sign * (final - chosen.value) > 0, "metric": metric})
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["| study | trial | setting | pruned at epoch (value) | unpruned, last epoch | arm's choice | "
             "would change the choice |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        setting = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        choice = ", ".join(f"{k}={v}" for k, v in (r["chosen"] or {}).items() if k not in r["params"] or
                           r["params"][k] != v)
        lines.append(f"| {r['study']} | {r['trial']} | {setting} | {r['stopped']} ({r['at']:.4f}) | {r['final']:.4f} "
                     f"| {choice} ({r['chosen_value']:.4f}) | {'**yes**' if r['changes'] else 'no'} |")
    metric = rows[0]["metric"] if rows else "the objective"
    changed = sum(r["changes"] for r in rows)
    return ("Every pruned tuning trial re-run to its last epoch, unpruned (benchmarks/pruning_check.py; "
            f"supplementary, post hoc). Values: {metric}. {changed} of {len(rows)} would have changed their arm's "
            "choice.\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("storage")
    p.add_argument("studies", nargs="+")
    p.add_argument("--out", default=None, help="write the markdown table here (default: print it)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [r for name in args.studies for r in check(args.storage, name, Path(scratch))]
    text = to_markdown(rows)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
