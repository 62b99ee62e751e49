"""Reproductions of published findings: `benchmarks/reproductions/<finding>/` holds `reproduce.yaml` (title, study
YAMLs, claims file, the smoke variant), the studies, `claims.yaml` and a README; running a finding runs its studies
on one storage (a rerun resumes), writes each study's report and the claim checks, and returns the verdicts.

The full run writes into the finding's `results/` folder (committed); `smoke` runs the reduced variant into a
scratch folder, so that CI exercises every finding end to end without touching the committed results; `pilot` runs
the finding's pilot variant (a few seeds of the real setting) into its `pilot/` folder (committed with the claims) and
writes the power plan the full run is sized from (`pilot/plan.md`).

`parts` split a full run that would not fit one session: each part runs its studies and merges them into the
committed archive beside the parts already there; the claims are judged once every study they name is in. A part
stopped midway archives what it finished (the study marked unfinished); running it again continues from there.

`sources` are single runs trained before the studies (e.g. a model fitted on the clean source domain) whose run
folder becomes `backbone.weights` of the studies they feed: a finding that starts from its own trained model is one
command, and a rerun reuses a finished source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_research import run_folder
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.findings import power_plan
from tl_research.findings.claims import Verdict, check_file, file_markdown, load_claims_file, named_studies
from tl_research.pipeline import run
from tl_research.reports import archive
from tl_research.reports.report import run_report
from tl_research.schema import from_dict, read_yaml
from tl_research.studies.storage import open_storage
from tl_research.studies.study import run_study
from tl_research.studies.studyspec import load_study, seed_list

ROOT = Path("benchmarks") / "reproductions"


@dataclass
class SourceSection:
    """`sources.<name>:` of reproduce.yaml: a run trained before the studies, whose folder feeds them."""

    experiment: str  # the source's experiment YAML (relative to the finding's folder)
    feeds: list[str]  # the study YAMLs that start from its weights


@dataclass
class VariantSection:
    """`smoke:` / `pilot:` of reproduce.yaml: a reduced variant of the studies (CI's smoke run, the pilot)."""

    seeds: int | list[int] | None = None  # the studies' seeds (a count or a list)
    grid: dict[str, Any] | None = None  # replaced values of the studies' grid axes (a tuned study's arms too)
    tune: dict[str, Any] | None = None  # replaced keys of the tuned studies' `tune:` (e.g. fewer trials)
    set: list[str] | None = None  # overrides of every study's experiment (key=value)
    sources: list[str] | None = None  # overrides of every source's experiment


@dataclass
class Manifest:
    """reproduce.yaml: what a finding runs."""

    studies: list[str]  # the study YAMLs, in the order they run
    title: str | None = None
    claims: str = "claims.yaml"  # the claims file, committed before the full run
    smoke: VariantSection = field(default_factory=VariantSection)
    pilot: VariantSection | None = None  # the pilot the power plan comes from
    sources: dict[str, SourceSection] = field(default_factory=dict)
    parts: dict[str, list[str]] = field(default_factory=dict)  # a full run in parts: each part's study YAMLs


@dataclass
class Source:
    name: str
    experiment: Path
    feeds: list[Path]  # the studies that start from its weights


@dataclass
class Finding:
    name: str
    folder: Path
    title: str
    studies: list[Path]
    claims: Path
    smoke: dict[str, Any] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    pilot: dict[str, Any] | None = None
    parts: dict[str, list[Path]] = field(default_factory=dict)

    def part(self, name: str) -> list[Path]:
        if name not in self.parts:
            known = ", ".join(self.parts) or "none: this finding runs whole"
            raise UserError(f"--part: {name!r} is not a part of {self.name} (parts: {known})")
        return self.parts[name]

    def variant(self, variant: str) -> dict[str, Any]:
        """The reduced variant's section (smoke or pilot)."""
        if variant == "pilot" and self.pilot is None:
            raise UserError(f"--pilot: {self.name}'s reproduce.yaml has no `pilot:` section (the reduced variant a "
                            f"power plan is estimated from)")
        return self.smoke if variant == "smoke" else self.pilot or {}


def list_findings(root: Path = ROOT) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/reproduce.yaml"))


def load_finding(name: str, root: Path = ROOT) -> Finding:
    """A finding by name (a folder under benchmarks/reproductions) or by its folder's path."""
    folder = Path(name) if Path(name, "reproduce.yaml").exists() else root / name
    manifest = folder / "reproduce.yaml"
    if Path(name).is_dir() and not manifest.exists():
        raise UserError(f"finding: {name} has no reproduce.yaml (a reproduction folder holds one)")
    if not manifest.exists():
        known = ", ".join(list_findings(root)) or f"none under {root}"
        raise UserError(f"finding: {name!r} is not a reproduction folder (known: {known})")
    m = from_dict(Manifest, read_yaml(manifest), f"{manifest}: ")
    studies = [folder / s for s in m.studies]
    missing = [str(s) for s in studies if not s.exists()]
    if missing:
        raise UserError(f"{manifest}: studies must list existing study YAMLs (missing: {', '.join(missing)})")
    smoke, pilot = ({k: v for k, v in dataclasses.asdict(section).items() if v is not None}
                    for section in (m.smoke, m.pilot or VariantSection()))
    for variant, section in (("smoke", smoke), ("pilot", pilot)):
        try:
            seed_list(section.get("seeds", 1))
        except UserError as exc:  # named after the manifest's key, not the study's it replaces
            raise UserError(f"{manifest}: {variant}.{str(exc).removeprefix('study.')}") from None
    return Finding(folder.name, folder, m.title or folder.name, studies, folder / m.claims, smoke,
                   _sources(m.sources, folder, studies, manifest), pilot if m.pilot else None,
                   _parts(m.parts, folder, studies, manifest))


def _parts(parts: dict[str, list[str]], folder: Path, studies: list[Path], manifest: Path) -> dict[str, list[Path]]:
    """The parts, checked: together they hold every study once."""
    out = {name: [folder / s for s in entries] for name, entries in parts.items()}
    listed = [s for entries in out.values() for s in entries]
    if out and sorted(map(str, listed)) != sorted(map(str, studies)):
        raise UserError(f"{manifest}: parts: together they must list every study once (studies: "
                        f"{', '.join(s.name for s in studies)})")
    return out


def _sources(sections: dict[str, SourceSection], folder: Path, studies: list[Path], manifest: Path) -> list[Source]:
    """The sources, checked against the finding's files."""
    out = []
    for name, entry in sections.items():
        experiment, feeds = folder / entry.experiment, [folder / f for f in entry.feeds]
        if not experiment.is_file():
            raise UserError(f"{manifest}: sources.{name}.experiment: {experiment} does not exist")
        strays = [str(f) for f in feeds if f not in studies]
        if strays:
            raise UserError(f"{manifest}: sources.{name}.feeds: {strays[0]} is not one of the finding's studies")
        out.append(Source(name, experiment, feeds))
    return out


def train_sources(finding: Finding, variant: str, out: Path, only: list[Path] | None = None) -> dict[Path, list[str]]:
    """Train (or reuse, when finished) every source (feeding a study of `only`, default all) into
    `out/sources/<name>`; returns, per study YAML, the `backbone.weights` overrides pointing at its sources."""
    reduced = variant != "full"
    sets = ([*finding.variant(variant).get("sources", []), f"output_dir={out / 'runs'}", "tracking.mode=disabled"]
            if reduced else [])
    feeds: dict[Path, list[str]] = {}
    for source in finding.sources:
        if only is not None and not set(source.feeds) & set(only):
            continue
        folder = out / "sources" / source.name
        if not run_folder.finished(folder):
            run(load_experiment(source.experiment, sets), folder)
        for study in source.feeds:
            feeds.setdefault(study, []).append(f"backbone.weights={folder.resolve()}")
    return feeds


def specs(finding: Finding, variant: str, out: Path, feeds: dict[Path, list[str]] | None = None,
          only: list[Path] | None = None) -> list[Any]:
    """The finding's studies (those of `only`, default all), parsed; a reduced variant (smoke, pilot) writes its
    runs under `out`; `feeds` adds the source weights to the studies that start from them."""
    feeds = feeds or {}
    chosen = [path for path in finding.studies if only is None or path in only]
    if variant == "full":
        return [load_study(path, feeds.get(path, [])) for path in chosen]
    reduced = finding.variant(variant)
    changes = {k: v for k, v in reduced.items() if k in ("seeds", "grid", "tune")}
    sets = [*reduced.get("set", []), f"output_dir={out / 'runs'}", "tracking.mode=disabled"]
    return [load_study(path, [*sets, *feeds.get(path, [])], changes) for path in chosen]


def default_out(finding: Finding, variant: str) -> Path:
    return Path("runs") / "reproductions" / (finding.name + ("" if variant == "full" else f"-{variant}"))


def results_folder(finding: Finding, variant: str, out: Path | None = None) -> Path:
    """Where a run's results go: the finding's committed `results/` (full) or `pilot/`, or the smoke variant's
    scratch folder."""
    if variant == "smoke":
        return (out or default_out(finding, variant)) / "results"
    return finding.folder / ("results" if variant == "full" else "pilot")


@dataclass
class Outcome:
    """What a reproduction (or a re-judging) gave."""

    verdicts: list[Verdict]  # the claims' (empty while they wait for studies)
    checks: list[Verdict]  # the sanity checks' (claims file `checks:`; not reproduction evidence)
    files: list[Path]
    waiting: list[str] = field(default_factory=list)  # studies the claims name that the archive lacks yet
    stopped: dict[str, int] = field(default_factory=dict)  # those archived unfinished: their trials complete so far


def reproduce(finding: Finding, variant: str = "full", out: Path | None = None, run_studies: Any = None,
              part: str | None = None) -> Outcome:
    """Run (or resume) the finding's studies (a part's, with `part`), archive what they give (`archive.py`: trials
    and per-example predictions; a part keeps the archive's other studies) and judge the finding from that archive
    alone — or, for the pilot, write the power plan. `run_studies(spec, url)` runs one study (default: without a
    progress display)."""
    out = out or default_out(finding, variant)
    url = f"sqlite:///{out / 'studies.db'}"
    results = results_folder(finding, variant, out)
    load_claims_file(finding.claims)  # a malformed claims file fails before hours of training
    only = finding.part(part) if part else None
    earlier = archive.Archive(results) if part and (results / archive.JOURNAL).is_file() else None
    names: list[str] = []
    continued: set[str] = set()
    try:
        for spec in specs(finding, variant, out, train_sources(finding, variant, out, only), only):
            names.append(spec.name)
            if earlier and archive.continue_study(earlier, spec, url):
                continued.add(spec.name)
            (run_studies or run_study)(spec, url)
    except (KeyboardInterrupt, SystemExit):
        # a part stopped midway (the session ends, Ctrl-C, SIGTERM) keeps what it finished: the archive holds it,
        # the study marked unfinished, and running the part again continues it (in this session or a later one)
        if part and names:
            archive.export(names, open_storage(url, must_exist=True), results, earlier=earlier,
                           unfinished=frozenset(names[-1:]), continued=frozenset(continued))
            print(f"\nstopped: {names[-1]} is archived unfinished in {results}; run --part {part} again to continue")
        raise
    files = archive.export(names, open_storage(url, must_exist=True), results, earlier=earlier,
                           continued=frozenset(continued))
    if variant == "pilot":  # the plan, once the pilot holds every study the claims name (a pilot may run in parts)
        waiting, stopped = _waiting_on(archive.Archive(results), named_studies(load_claims_file(finding.claims).claims))
        if waiting:
            return Outcome([], [], files, waiting, stopped)
        return Outcome([], [], [*files, write_plan(finding, results)])
    judged = judge(finding, results, wandb_dir=out / "reports")
    return dataclasses.replace(judged, files=files + judged.files)


def _waiting_on(opened: archive.Archive, named: set[str]) -> tuple[list[str], dict[str, int]]:
    """The studies in `named` that the archive does not hold finished, and how far each one archived unfinished got
    (its complete trials)."""
    waiting = sorted(named - set(opened.finished()))
    stopped = set(opened.unfinished())
    return waiting, {n: opened.complete(n) for n in waiting if n in stopped}


def default_pilot(finding: Finding) -> Path | None:
    """What the finding's plan is estimated from: its last full run's archive, else its committed pilot (one that
    holds every study the claims name: not a finding half run in parts)."""
    named = named_studies(load_claims_file(finding.claims).claims)
    for folder in (finding.folder / "results", finding.folder / "pilot"):
        if (folder / archive.JOURNAL).is_file() and named <= set(archive.Archive(folder).finished()):
            return folder
    return None


def write_plan(finding: Finding, pilot: Path) -> Path:
    """The power plan of the finding's full design from its pilot archive (`pilot/plan.md`)."""
    seeds = power_plan.study_seeds(finding.studies)
    needs = power_plan.plan_claims(load_claims_file(finding.claims).claims, pilot, seeds)
    path = pilot / "plan.md"
    table = power_plan.to_markdown(needs, f"the pilot ({finding.name}/pilot)")
    path.write_text(f"# {finding.title}: power plan\n\n{table}")
    return path


def judge(finding: Finding, results: Path, wandb_dir: Path | None = None) -> Outcome:
    """Each study's report and the claim checks (`claims.md`) from the results archive in `results` alone (no
    training, no storage, no run folders): the full run and `--rejudge` write the same bytes. While a study the
    claims name is missing (a finding run in parts), the claims wait and a stale claims.md is removed. With
    `wandb_dir`, each report is also a W&B summary run, its files there (never inside the committed results)."""
    parsed = load_claims_file(finding.claims)
    opened = archive.Archive(results)
    finished = opened.finished()  # an unfinished study's report and claims wait for the rest of its part
    files: list[Path] = []
    for name in finished:
        files += run_report(name, opened.storage, results / name, lookup=opened.lookups(name),
                            track=wandb_dir is not None, wandb_dir=wandb_dir and wandb_dir / name)[1]
    waiting, stopped = _waiting_on(opened, named_studies([*parsed.claims, *parsed.checks]))
    if waiting:
        (results / "claims.md").unlink(missing_ok=True)
        return Outcome([], [], files, waiting, stopped)
    verdicts, checks = check_file(parsed, None, opened.storage, opened.lookups)
    (results / "claims.md").write_text(f"# {finding.title}: claims\n\n{file_markdown(parsed, verdicts, checks)}")
    return Outcome(verdicts, checks, [*files, results / "claims.md"])
