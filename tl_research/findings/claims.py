"""Claims checked on studies: a YAML file of published findings, each turned into a paired comparison of study cells
and judged held / failed / inconclusive by the simultaneous interval of its effect (the claims of a file are one
family, Bonferroni level) with the tables' decision rule (`stats.side`).

A claims file holds `source` (where the findings come from) and `claims`, each one of:

- `a: {key: value, …}`, `relation: ">" | ">=" | "≈"`, `b: {…}` (`within: d` for `≈`, a tolerance for `>=`; a side
  may name another study of the storage with `study:`, paired on the seeds both share);
- `cells: {…}`, `relation: increasing | decreasing`, `over: <swept key>` (a curve, its values in sorted order);
- `cells: {…}`, `relation: argmax`, `over: <swept key>`, `expect: <value>` (which value is best).

Any claim may give `expected: <effect>` (e.g. the paper's), which `tlr plan` sizes the design for. A pairwise claim
may instead address the mean over a swept key — a suite study's tasks: `mean_over: task` (optionally `among: [task,
…]`, e.g. one group) compares the two sides' means over those tasks, paired per task, with the t-over-tasks interval
(`stats.compare_tasks`).

A cell is the set of completed trials whose parameters match the mapping; every swept key but the seed must be
pinned (by the claim or, for `over`, by the curve). `study:` names the study (default: the one given to `tlr check`),
`metric:` the metric (default test/acc). Claims are written before the full run and never edited to fit.

A file may add `checks:` (claims of the same shape): the project's own sanity checks of the setting (e.g. the probe
rises with shots), judged as their own family and reported apart, never counted as reproduction evidence; and
`paper_strength: true` when its claims state the paper's findings at the paper's strength, so that claims.md opens
with the finding's verdict (reproduced / partly reproduced / not reproduced / undecided).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from tl_research import stats
from tl_research.errors import UserError
from tl_research.reports import predictions
from tl_research.reports.tables import Cell, compare_cells, compared, completed_trials, make_cell, sort_key
from tl_research.schema import bounds, from_dict, read_yaml
from tl_research.studies.storage import open_storage
from tl_research.studies.study import load_existing

PAIR = {">", ">=", "≈", "~="}
CURVE = {"increasing", "decreasing"}
MIN_SEEDS_ONLY = 5  # seeds a verdict needs when the interval resamples seeds only (no per-example predictions)


@dataclass
class Claim:
    """One claim of a claims file (see the module docstring for the relations)."""

    relation: Literal[">", ">=", "≈", "~=", "increasing", "decreasing", "argmax"]
    id: str | None = None  # None: its position in the file
    study: str | None = None  # the study of its cells (None: the one given to tlr check)
    says: str = ""  # the claim in words
    published: str = ""  # what the paper reports
    metric: str = "test/acc"
    a: dict[str, Any] | None = None  # pairwise relations: the two cells (a side may name its own `study`)
    b: dict[str, Any] | None = None
    within: float = field(default=0.0, metadata=bounds(ge=0.0))  # ≈: the tolerance; >=: how far below still holds
    cells: dict[str, Any] | None = None  # curves and argmax: the pinned keys
    over: str | None = None  # curves and argmax: the swept key
    expect: Any = None  # argmax: the value expected to be best
    # pairwise relations: compare the means over this swept key's values (e.g. a suite's tasks), paired per value
    mean_over: str | None = None
    among: list[Any] | None = None  # mean_over: only these values (default: every value of the key)
    # the effect expected (e.g. the paper's), in the terms claims.md prints: a - b; last - first (increasing) or
    # first - last (decreasing); the expected best's margin over its closest rival (argmax). Used by `tlr plan`.
    expected: float | None = None


@dataclass
class ClaimsFile:
    claims: list[Claim]
    source: str = ""  # where the findings come from
    # the project's own sanity checks: judged and reported (their own family), never counted as reproduction evidence
    checks: list[Claim] = field(default_factory=list)
    # the claims state the paper's findings at its strength, so claims.md opens with the finding's verdict
    paper_strength: bool = False


@dataclass
class Verdict:
    id: str
    study: str
    relation: str
    verdict: str  # held | failed | inconclusive
    effect: float  # the difference the verdict rests on (a - b; last - first; best margin)
    low: float
    high: float
    p: float
    n: int
    detail: str  # the cells and their means, in words
    says: str = ""
    published: str = ""
    method: str = "crossed-t"  # the interval's method (stats.Interval.method)
    cells: tuple[Cell, Cell] | None = field(default=None, repr=False)  # the comparison the verdict rests on (a, b)


OUTCOME = {1: "held", -1: "failed", 0: "inconclusive"}


def _judge(interval: stats.Interval, relation: str, within: float) -> str:
    """The tables' decision rule (`stats.side`) on the interval of a - b: held when it lies wholly on the claimed
    side of the margin, failed when wholly on the other side, inconclusive otherwise."""
    if relation in (">", ">="):
        return OUTCOME[stats.side(interval, -within if relation == ">=" else 0.0)]
    # equivalence: held when the whole interval lies inside ±within, failed when it lies wholly outside
    if stats.side(interval, -within) > 0 and stats.side(interval, within) < 0:
        return "held"
    return "failed" if stats.side(interval, within) > 0 or stats.side(interval, -within) < 0 else "inconclusive"


class Cells:
    """A study's completed trials, looked up by a parameter mapping."""

    def __init__(self, study: optuna.Study, metric: str, lookup: predictions.Lookup, family: int) -> None:
        self.trials, hidden = compared([t for t in completed_trials(study) if metric in t.user_attrs])
        self.metric, self.lookup, self.family = metric, lookup, family
        self.swept = sorted({k for t in self.trials for k in t.params if k != "seed" and k not in hidden})

    def get(self, where: dict[str, Any], label: str) -> Cell:
        for key in where:
            if key not in self.swept:
                raise UserError(f"{label}: {key!r} is not a swept key of this study "
                                f"(swept: {', '.join(self.swept) or 'none'})")
        loose = [k for k in self.swept if k not in where]
        if loose:
            raise UserError(f"{label}: also pin {', '.join(loose)} (every swept key but the seed names one cell)")
        by_seed = {int(t.params.get("seed", t.number)): t for t in self.trials
                   if all(t.params.get(k) == v for k, v in where.items())}
        if not by_seed:
            raise UserError(f"{label}: no completed trial with {where} has {self.metric}")
        return make_cell(by_seed, self.metric, self.lookup)

    def values(self, key: str) -> list[Any]:
        return sorted({t.params[key] for t in self.trials if key in t.params}, key=sort_key)


def _describe(where: dict[str, Any], cell: Cell | None, mean: float | None = None) -> str:
    text = f"{', '.join(f'{k}={v}' for k, v in where.items())}: "
    return text + (f"{cell.mean:.3f} (n={cell.n})" if cell is not None else f"{mean:.3f}")


Judged = tuple[str, stats.Comparison, str, tuple[Cell, Cell] | None]  # verdict, comparison, detail, its cells (a, b)


def _pair(c: Claim, cells: Cells, label: str, other: Any) -> Judged:
    if c.mean_over is not None:
        return _mean_pair(c, cells, label)
    sides = []
    for side in ("a", "b"):
        if getattr(c, side) is None:
            raise UserError(f"{label}.{side}: relation {c.relation} needs `{side}: {{key: value, …}}`")
        where = dict(getattr(c, side))
        # a side may name another study (same seeds): e.g. a recipe against the catalogue's best strategy
        sides.append((other(where.pop("study")) if "study" in where else cells).get(where, f"{label}.{side}"))
    a, b = sides
    comp = _comparison(a, b, cells, label)
    verdict = _judge(comp.interval, *_within(c, label))
    return verdict, comp, f"{_describe(c.a or {}, a)} vs {_describe(c.b or {}, b)}", (a, b)


def _within(c: Claim, label: str) -> tuple[str, float]:
    rel = "≈" if c.relation == "~=" else c.relation
    if rel == "≈" and c.within <= 0:
        raise UserError(f"{label}.within: relation ≈ needs a tolerance within > 0 (in metric units)")
    return rel, c.within


def _mean_pair(c: Claim, cells: Cells, label: str) -> Judged:
    """a vs b as means over the values of `mean_over` (a suite's tasks), paired per value: t over the per-value
    differences of the cells' means, at the claims family's level."""
    key = c.mean_over
    if key not in cells.swept:
        raise UserError(f"{label}.mean_over: {key!r} is not a swept key of this study "
                        f"(swept: {', '.join(cells.swept) or 'none'})")
    values = cells.values(key)
    chosen = values if c.among is None else c.among
    unknown = [v for v in chosen if v not in values]
    if unknown or len(chosen) < 2 or not isinstance(chosen, list):
        raise UserError(f"{label}.among: a list of two or more values of {key} ({', '.join(map(str, values))})")
    twice = [v for i, v in enumerate(chosen) if v in chosen[:i]]
    if twice:  # a value listed twice would count its cells twice in the mean and the t over values
        raise UserError(f"{label}.among: {twice[0]!r} appears twice")
    means = {}
    for side in ("a", "b"):
        where = dict(getattr(c, side) or {})
        if "study" in where or key in where:
            raise UserError(f"{label}.{side}: a mean over {key} pins neither {key} nor another study")
        means[side] = [cells.get({**where, key: v}, f"{label}.{side} at {key}={v}").mean for v in chosen]
    comp = stats.compare_tasks(means["a"], means["b"], stats.bonferroni(cells.family))
    comp = dataclasses.replace(comp, p=stats.adjusted(comp.p, cells.family))
    verdict = _judge(comp.interval, *_within(c, label))
    detail = (f"mean over {key} ({len(chosen)}): {_describe(c.a or {}, None, sum(means['a']) / len(chosen))} vs "
              f"{_describe(c.b or {}, None, sum(means['b']) / len(chosen))}")
    return verdict, comp, detail, None


def _comparison(a: Cell, b: Cell, cells: Cells, label: str) -> stats.Comparison:
    """a - b at the claims family's level (every claim of a file is one of `cells.family` simultaneous ones)."""
    comp = compare_cells(a, b, cells.family)
    if comp is None:
        raise UserError(f"{label}: the cells share no seed, so they cannot be compared paired")
    return comp


def _curve(c: Claim, cells: Cells, label: str, other: Any) -> Judged:
    over, base = _over(c, cells, label)
    points = [(v, cells.get({**base, over: v}, f"{label} at {over}={v}")) for v in cells.values(over)]
    if len(points) < 2:
        raise UserError(f"{label}.over: {over} has fewer than two values in this study")
    sign = 1 if c.relation == "increasing" else -1
    steps = [_comparison(*(points[i + 1][1], points[i][1]) if sign > 0 else (points[i][1], points[i + 1][1]),
                         cells, label) for i in range(len(points) - 1)]
    first, last = points[0][1], points[-1][1]
    ends = (last, first) if sign > 0 else (first, last)
    whole = _comparison(*ends, cells, label)
    # failed: some step goes significantly the wrong way; held: no such step and first -> last significantly right
    if any(stats.side(s.interval) < 0 for s in steps):
        verdict = "failed"
    else:
        verdict = "held" if stats.side(whole.interval) > 0 else "inconclusive"
    detail = ", ".join(f"{v}: {cell.mean:.3f}" for v, cell in points)
    return verdict, whole, f"{over} curve ({detail})", ends


def _argmax(c: Claim, cells: Cells, label: str, other: Any) -> Judged:
    over, base = _over(c, cells, label)
    values = cells.values(over)
    if c.expect not in values:
        raise UserError(f"{label}.expect: must be one of the values of {over} ({', '.join(map(str, values))})")
    mine = cells.get({**base, over: c.expect}, label)
    others = [(v, cells.get({**base, over: v}, f"{label} at {over}={v}")) for v in values if v != c.expect]
    comps = [(v, _comparison(mine, cell, cells, label)) for v, cell in others]
    # the closest competitor decides: held when the expected value beats every other one, failed when one beats it
    v_close, close = min(comps, key=lambda vc: vc[1].diff)
    rival = next(cell for v, cell in others if v == v_close)
    # (an intersection-union test: every comparison must hold at the family's level, no further correction)
    if any(stats.side(comp.interval) < 0 for _, comp in comps):
        verdict = "failed"
    else:
        verdict = "held" if all(stats.side(comp.interval) > 0 for _, comp in comps) else "inconclusive"
    detail = ", ".join(f"{v}: {cell.mean:.3f}" for v, cell in [(c.expect, mine), *others])
    return verdict, close, f"{over}={c.expect} vs closest {over}={v_close} ({detail})", (mine, rival)


def _over(c: Claim, cells: Cells, label: str) -> tuple[str, dict[str, Any]]:
    if c.over not in cells.swept:
        raise UserError(f"{label}.over: {c.over!r} is not a swept key of this study (swept: {', '.join(cells.swept)})")
    return c.over, c.cells or {}


def load_claims_file(path: str | Path) -> ClaimsFile:
    """A claims file (claims, checks), checked for shape (not yet against a study)."""
    return parse_claims(read_yaml(path), f"{path}: ")


def load_claims(path: str | Path) -> tuple[str, list[Claim]]:
    """The claims of a file, checked for shape (not yet against a study)."""
    parsed = load_claims_file(path)
    return parsed.source, parsed.claims


def parse_claims(raw: Any, prefix: str = "") -> ClaimsFile:
    """A claims file's mapping as typed claims (key-path errors, after `prefix`); ids default to positions and must
    be unique."""
    parsed = from_dict(ClaimsFile, raw, prefix)
    seen: set[str] = set()
    for key in ("claims", "checks"):
        for i, c in enumerate(getattr(parsed, key)):
            c.id = (str(i) if key == "claims" else f"check-{i}") if c.id is None else c.id
            if c.id in seen:
                raise UserError(f"{prefix}{key}[{i}].id: {c.id!r} appears twice")
            seen.add(c.id)
    return parsed


def named_studies(claims: list[Claim]) -> set[str]:
    """The studies the claims name (their own and their sides')."""
    sides = [side for c in claims for side in (c.a, c.b) if side and "study" in side]
    return {c.study for c in claims if c.study} | {str(side["study"]) for side in sides}


def check_claims(claims: list[Claim] | list[dict[str, Any]], default_study: str | None,
                 storage: str | optuna.storages.BaseStorage,
                 lookups: Callable[[str], predictions.Lookup] = predictions.run_folders) -> list[Verdict]:
    """Every claim judged on the studies of `storage` (a URL or an open storage), as one family of simultaneous
    comparisons (claims as parsed, or as mappings of a claims file). `lookups(study)`: where that study's trials
    keep their per-example predictions (default: their run folders)."""
    if claims and isinstance(claims[0], dict):
        claims = parse_claims({"claims": claims}).claims
    if isinstance(storage, str):
        storage = open_storage(storage, must_exist=True)
    tables: dict[tuple[str, str], Cells] = {}

    def cells_of(name: str, metric: str) -> Cells:
        if (name, metric) not in tables:
            study = load_existing(name, storage, "study")[0]
            tables[(name, metric)] = Cells(study, metric, lookups(name), len(claims))
        return tables[(name, metric)]

    out = []
    for i, c in enumerate(claims):
        label = f"claims[{i}] ({c.id})"
        name = c.study or default_study
        if not name:
            raise UserError(f"{label}.study: name the study (or pass one to tlr check)")
        metric = c.metric
        if c.mean_over is not None and c.relation not in PAIR:
            raise UserError(f"{label}.mean_over: only pairwise relations (>, >=, ≈) compare means over a key")
        if c.among is not None and c.mean_over is None:
            raise UserError(f"{label}.among: picks the values a mean_over averages; this claim has no mean_over")
        judge = _pair if c.relation in PAIR else _curve if c.relation in CURVE else _argmax
        verdict, comp, detail, pair = judge(c, cells_of(name, metric), label, lambda s, m=metric: cells_of(s, m))
        if comp.interval.method == "seeds-t" and comp.n < MIN_SEEDS_ONLY:
            # resampling a handful of seeds alone gives intervals far too narrow to rest a verdict on
            verdict, detail = "inconclusive", f"{detail}; only {comp.n} seeds and no per-example predictions"
        out.append(Verdict(str(c.id), name, c.relation, verdict, comp.diff, comp.interval.low, comp.interval.high,
                           comp.p, comp.n, detail, c.says, c.published, comp.test, pair))
    return out


def _table(verdicts: list[Verdict], level: str) -> list[str]:
    lines = [f"| claim | relation | verdict | effect [{level} CI] | p (adjusted) | n | interval | cells |",
             "|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        p = "– (one seed, no predictions)" if v.p != v.p else f"{v.p:.3g}"
        lines.append(f"| {v.id} | {v.relation} | **{v.verdict}** | {v.effect:+.3f} [{v.low:+.3f}, {v.high:+.3f}] "
                     f"| {p} | {v.n} | {v.method} | {v.detail} |")
    return lines


def _counts(verdicts: list[Verdict]) -> dict[str, int]:
    counts = {name: 0 for name in ("held", "failed", "inconclusive")}
    for v in verdicts:
        counts[v.verdict] += 1
    return counts


def _tally(counts: dict[str, int]) -> str:
    """"2 held, 1 inconclusive": the verdicts that occur, in a fixed order."""
    return ", ".join(f"{n} {name}" for name, n in counts.items() if n)


def finding_verdict(verdicts: list[Verdict]) -> str:
    """The finding's verdict from claims at the paper's strength: reproduced (every claim held), partly (some held),
    not reproduced (none held, some failed), undecided (none decided)."""
    counts, k = _counts(verdicts), len(verdicts)
    if counts["held"] == k:
        word = "reproduced"
    elif counts["held"]:
        word = "partly reproduced"
    else:
        word = "not reproduced" if counts["failed"] else "undecided"
    return f"**Verdict: {word}** — of {k} claims at the paper's strength: {_tally(counts)}."


def to_markdown(verdicts: list[Verdict], source: str = "", alpha: float = stats.ALPHA,
                verdict_line: bool = False) -> str:
    k = len(verdicts)
    level = f"{100 * stats.bonferroni(k, alpha):.4g}%"
    summary = finding_verdict(verdicts) if verdict_line else _tally(_counts(verdicts))
    notes = (f"\n\nThe {k} claims are one family: each effect's interval is a simultaneous {level} interval "
             f"(Bonferroni, α = {alpha:g} over {k} claims). A claim holds when its interval lies wholly on the claimed "
             f"side, fails when it lies wholly on the other side, and is inconclusive otherwise (curves: first to "
             f"last, failed by any step significantly the wrong way; argmax: the expected value against every other, "
             f"the closest shown). Intervals: crossed-t = seeds × test examples, paired by seed and example, from "
             f"each run's per-example predictions; seeds-t = over seeds only (no predictions: leaves out the "
             f"test-set term; fewer than {MIN_SEEDS_ONLY} seeds is inconclusive). p = min(1, {k}·p) from the t test "
             f"of the same statistic, so p < α exactly when the interval excludes 0.")
    head = f"Source: {source.strip()}\n\n" if source.strip() else ""
    return f"{head}{summary}\n\n" + "\n".join(_table(verdicts, level)) + notes + "\n"


def checks_markdown(checks: list[Verdict], alpha: float = stats.ALPHA) -> str:
    """The sanity checks' table: the project's own checks of the setting, not evidence for or against the paper."""
    k = len(checks)
    level = f"{100 * stats.bonferroni(k, alpha):.4g}%"
    summary = _tally(_counts(checks))
    return (f"## Sanity checks (not reproduction evidence)\n\n{summary}\n\n" + "\n".join(_table(checks, level))
            + f"\n\nThe {k} checks are their own family (simultaneous {level} intervals, Bonferroni over {k}), "
              f"judged by the same rule as the claims.\n")


def check_file(parsed: ClaimsFile, default_study: str | None, storage: str | optuna.storages.BaseStorage,
               lookups: Callable[[str], predictions.Lookup] = predictions.run_folders,
               ) -> tuple[list[Verdict], list[Verdict]]:
    """A claims file's claims and its sanity checks, each judged as its own family."""
    if isinstance(storage, str):
        storage = open_storage(storage, must_exist=True)
    checks = check_claims(parsed.checks, default_study, storage, lookups) if parsed.checks else []
    return check_claims(parsed.claims, default_study, storage, lookups), checks


def file_markdown(parsed: ClaimsFile, verdicts: list[Verdict], checks: list[Verdict]) -> str:
    """claims.md's body: the claims (with the finding's verdict at the paper's strength), then the checks."""
    text = to_markdown(verdicts, parsed.source, verdict_line=parsed.paper_strength)
    return text + ("\n" + checks_markdown(checks) if checks else "")
