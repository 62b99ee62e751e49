"""`study.prefilter: {score: logme, keep: N}`: rank a study's backbone x freeze-depth candidates by a
transferability score (rank.py) before any training, and run only the best N.

The ranking is computed once by whoever creates the study and stored in the study itself (`tlr_prefilter`), so a
resumed study, every worker and `tlr report` see the same kept candidates. Grid studies keep only the cells of the
kept candidates; search studies enqueue the kept candidates first (a warm start), then sample as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tl_research.errors import UserError
from tl_research.schema import bounds, from_dict
from tl_research.scores.registry import score_names
from tl_research.studies.kinds import kind_of

if TYPE_CHECKING:  # reading a study (which parses its prefilter) imports neither Optuna nor the scores' torch
    import optuna

ATTR = "tlr_prefilter"
KEYS = ("backbone.name", "freeze.depth")


@dataclass
class PrefilterConfig:
    score: str = "logme"
    keep: int = field(default=1, metadata=bounds(ge=1))
    per_class: int = field(default=50, metadata=bounds(ge=2))


def parse(value: Any) -> PrefilterConfig | None:
    if value is None:
        return None

    cfg = from_dict(PrefilterConfig, value, "study.prefilter.")
    if cfg.score not in score_names():
        raise UserError(f"study.prefilter.score: {cfg.score!r} is not a score (allowed: {', '.join(score_names())})")
    return cfg


def candidates(spec: Any) -> list[dict[str, Any]]:
    """The backbone x depth combinations the study sweeps (a missing key: the base experiment's value)."""
    space = kind_of(spec).swept(spec)
    swept = {k: list(space[k]) for k in KEYS if k in (space or {})}
    if not swept:
        raise UserError("study.prefilter: the study sweeps neither backbone.name nor freeze.depth (as grid values or "
                        "categorical choices), so there is nothing to rank")
    names = swept.get("backbone.name", [spec.experiment.backbone.name])
    depths = swept.get("freeze.depth", [None])
    return [{k: v for k, v in (("backbone.name", b), ("freeze.depth", d)) if k in swept}
            for b in names for d in depths]


def compute(spec: Any) -> dict[str, Any]:
    """Rank every candidate; the stored record: rows (best first) and the kept candidates."""
    from tl_research.scores.rank import ordered, rank  # torch: only for a study that pre-filters

    cfg = parse(spec.config.prefilter)
    by_backbone: dict[str, list[dict[str, Any]]] = {}
    for cand in candidates(spec):
        by_backbone.setdefault(cand.get("backbone.name", spec.experiment.backbone.name), []).append(cand)
    rows = []
    for name, cands in by_backbone.items():
        # one rank call per backbone: its model, data and LEEP/NCE are prepared once for all its depths; depth 0
        # trains everything from the raw input and is scored on the whole network's features
        depths = [c["freeze.depth"] for c in cands if c.get("freeze.depth")]
        scored = {c.depth: c for c in rank(spec.experiment, [name], depths, cfg.per_class)} if depths else {}
        full = rank(spec.experiment, [name], None, cfg.per_class)[0] if len(depths) < len(cands) else None
        rows += [(c, scored[c["freeze.depth"]] if c.get("freeze.depth") else full) for c in cands]
    best = ordered([c for _, c in rows], cfg.score)
    order = [next(cand for cand, c in rows if c is b) for b in best]
    return {"score": cfg.score, "keep": [dict(c) for c in order[: cfg.keep]],
            "ranking": [{**cand, **{k: v for k, v in b.row().items() if k not in ("backbone", "depth")}}
                        for cand, b in zip(order, best)]}


def kept(cell: dict[str, Any], record: dict[str, Any]) -> bool:
    return any(all(cell.get(k) == v for k, v in cand.items()) for cand in record["keep"])


def apply(spec: Any, study: optuna.Study, create: bool = False) -> dict[str, Any] | None:
    """Restrict `spec` to the stored ranking's kept candidates (computing and storing it when `create` and the
    study has none yet); returns the record, or None without a prefilter."""
    if spec.config.prefilter is None:
        return None
    record = study.user_attrs.get(ATTR)
    if record is None:
        if not create:
            return None
        record = compute(spec)
        study.set_user_attr(ATTR, record)
    if kind_of(spec).FIXED_CELLS:
        spec.cells = [c for c in spec.cells if kept(c, record)]
    return record


def warm_start(study: optuna.Study, record: dict[str, Any]) -> None:
    """A search tries the kept candidates first (once: not again on resume)."""
    if not study.get_trials(deepcopy=False):
        for cand in record["keep"]:
            study.enqueue_trial(cand)


def to_markdown(record: dict[str, Any]) -> str:
    keys = [k for k in KEYS if k in record["ranking"][0]]
    cols = [*score_names(), "seconds"]
    lines = [f"Pre-filter: candidates ranked by {record['score']} before training; kept: "
             f"{', '.join(str(list(c.values())) for c in record['keep'])}.", "",
             "| " + " | ".join([*keys, *cols]) + " |", "|" + "---|" * (len(keys) + len(cols))]
    for row in record["ranking"]:
        vals = ["–" if row.get(c) is None else f"{row[c]:.4g}" for c in cols]
        lines.append("| " + " | ".join([*(str(row[k]) for k in keys), *vals]) + " |")
    return "\n".join(lines) + "\n"
