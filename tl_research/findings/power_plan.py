"""Power plans: before a finding's full run, the seeds and test examples each claim needs to be decided.

From a pilot (a few seeds of the real setting, the smoke variant, or the finding's last full run as committed in its
results archive) every claim's deciding comparison gives the variance components of its difference matrix (seeds x
test examples, `stats.components`). With the effect the claim expects (`expected:`; else the pilot's own effect,
labelled post hoc) and the family's level (Bonferroni over the finding's claims), `stats.power` gives the power of
the planned design, and `stats.seeds_for` / `stats.examples_for` the seeds at the planned test size and the test
examples at the planned seeds for 80 % power.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tl_research import stats
from tl_research.errors import UserError
from tl_research.findings.claims import Claim, Verdict, check_claims
from tl_research.reports import archive, predictions
from tl_research.reports.tables import paired_matrices
from tl_research.schema import read_yaml
from tl_research.studies.storage import open_storage
from tl_research.studies.studyspec import seed_list


@dataclass
class Need:
    """One claim's plan."""

    id: str
    relation: str
    effect: float | None  # the margin the interval must clear (None: the claimed side cannot be reached)
    source: str  # expected | pilot (post hoc) | none
    components: stats.Components | None  # None: the pilot has no per-example predictions for this comparison
    seeds: int  # the planned design
    examples: int
    power: float | None
    seeds_needed: int | None  # at the planned test size (None: no number of seeds suffices)
    examples_needed: int | None  # at the planned seeds
    note: str = ""


def _margin(claim: Claim, effect: float) -> float | None:
    """How far on the claimed side of the decision margin the expected effect lies (what power is computed for):
    `>` needs the interval above 0, `>=` above -within, `≈` inside ±within (the nearer bound binds)."""
    if claim.relation in ("≈", "~="):
        margin = claim.within - abs(effect)
    elif claim.relation == ">=":
        margin = effect + claim.within
    else:
        margin = effect
    return margin if margin > 0 else None


def _difference(verdict: Verdict) -> np.ndarray | None:
    matrices = paired_matrices(*verdict.cells) if verdict.cells else None
    return None if matrices is None else matrices[0].astype(float) - matrices[1].astype(float)


def plan(claims: list[Claim], pilot: list[Verdict], seeds: dict[str, int], examples: int | None = None,
         alpha: float = stats.ALPHA, target: float = stats.POWER) -> list[Need]:
    """Each claim's needs from its verdict on the pilot (`pilot[i]` judges `claims[i]`): `seeds` per study of the
    planned design, `examples` its test size (None: the pilot's)."""
    level = 1 - stats.bonferroni(len(claims), alpha)  # each claim is one of the family
    out = []
    for claim, verdict in zip(claims, pilot):
        d = _difference(verdict)
        expected = claim.expected if claim.expected is not None else verdict.effect
        source = "expected" if claim.expected is not None else "pilot (post hoc)"
        margin = _margin(claim, expected)
        n_seeds = seeds.get(verdict.study, verdict.n)
        n_examples = examples or (d.shape[1] if d is not None else 0)
        if d is None or d.shape[0] < 2:
            why = "the pilot has no per-example predictions here" if d is None else "the pilot has one seed"
            out.append(Need(str(claim.id), claim.relation, margin, source, None, n_seeds, n_examples, None, None,
                            None, why))
            continue
        comps = stats.components(d)
        if comps.variance(1, 1) == 0:
            out.append(Need(str(claim.id), claim.relation, margin, source, comps, n_seeds, n_examples, None, None,
                            None, "the pilot's two cells agree on every example of every seed: nothing to plan from"))
            continue
        if margin is None:
            out.append(Need(str(claim.id), claim.relation, None, source, comps, n_seeds, n_examples, None, None,
                            None, f"an effect of {expected:+.3f} is not on the claimed side"))
            continue
        out.append(Need(str(claim.id), claim.relation, margin, source, comps, n_seeds, n_examples,
                        stats.power(margin, comps, n_seeds, n_examples, level),
                        stats.seeds_for(margin, comps, n_examples, level, target),
                        stats.examples_for(margin, comps, n_seeds, level, target)))
    return out


def study_seeds(study_yamls: list[Path]) -> dict[str, int]:
    """Seeds per study name, as the finding's study YAMLs plan them."""
    out = {}
    for path in study_yamls:
        section: Any = (read_yaml(path) or {}).get("study", {})
        out[str(section.get("name"))] = len(seed_list(section.get("seeds", 1)))
    return out


def short(need: Need) -> bool:
    """Is the planned design below what the claim needs?"""
    return need.power is not None and need.power < stats.POWER


def to_markdown(needs: list[Need], pilot: str, alpha: float = stats.ALPHA, target: float = stats.POWER) -> str:
    k = len(needs)
    lines = [f"Pilot: {pilot}. Each of the {k} claims is tested at α/{k} = {alpha / k:.4g} (Bonferroni over the "
             f"finding's claims); power {target:.0%} to decide it on its claimed side.", "",
             "| claim | relation | margin to clear | from | sd seed / example / residual | planned seeds × test "
             "| power | seeds needed (at that test size) | test examples needed (at those seeds) | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n in needs:
        sds = ("–" if n.components is None else
               " / ".join(f"{v ** 0.5:.3f}" for v in (n.components.seed, n.components.example,
                                                     n.components.residual)))
        margin = "–" if n.effect is None else f"{n.effect:.3f}"
        power = "–" if n.power is None else f"{n.power:.2f}"
        need_s, need_n = (("–", "–") if n.power is None else
                          tuple("none suffice" if v is None else str(v) for v in (n.seeds_needed, n.examples_needed)))
        note = n.note or ("below the plan" if short(n) else "")
        lines.append(f"| {n.id} | {n.relation} | {margin} | {n.source} | {sds} | {n.seeds} × {n.examples} | {power} "
                     f"| {need_s} | {need_n} | {note} |")
    return "\n".join(lines) + "\n"


def open_pilot(pilot: str | Path) -> tuple[Any, Callable[[str], predictions.Lookup]]:
    """A pilot's storage and prediction lookups: a results archive folder, or a storage URL (its trials' run
    folders hold the predictions)."""
    if (Path(pilot) / archive.JOURNAL).is_file():
        opened = archive.Archive(Path(pilot))
        return opened.storage, opened.lookups
    if "://" not in str(pilot) and not str(pilot).startswith("journal:"):
        raise UserError(f"--pilot: {pilot} is neither a results archive folder (studies.journal + predictions.npz) nor "
                        f"a storage URL")
    try:
        return open_storage(str(pilot), must_exist=True), predictions.run_folders
    except UserError as exc:  # the storage's own message, named after the flag the user gave
        raise UserError(f"--pilot: {str(exc).removeprefix('--storage: ')}") from None


def plan_claims(claims: list[Claim], pilot: str | Path, seeds: dict[str, int], study: str | None = None,
                examples: int | None = None) -> list[Need]:
    """Judge the claims on the pilot, then plan each from its deciding comparison."""
    storage, lookups = open_pilot(pilot)
    return plan(claims, check_claims(claims, study, storage, lookups), seeds, examples)
