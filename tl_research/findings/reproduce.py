"""Reproductions of published findings: `benchmarks/reproductions/<finding>/` holds `reproduce.yaml` (title, study
YAMLs, claims file, the smoke variant), the studies, `claims.yaml` and a README; running a finding runs its studies
on one storage (a rerun resumes), writes each study's report and the claim checks, and returns the verdicts.

The full run writes into the finding's `results/` folder (committed); `smoke` runs the reduced variant into a
scratch folder, so that CI exercises every finding end to end without touching the committed results.

`sources` are single runs trained before the studies (e.g. a model fitted on the clean source domain) whose run
folder becomes `backbone.weights` of the studies they feed: a finding that starts from its own trained model is one
command, and a rerun reuses a finished source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.findings.claims import Verdict, check_claims, load_claims, to_markdown
from tl_research.reports import archive
from tl_research.reports.report import run_report
from tl_research.run import run
from tl_research.schema import from_dict, read_yaml
from tl_research.studies.storage import open_storage
from tl_research.studies.study import run_study
from tl_research.studies.studyspec import load_study

ROOT = Path("benchmarks") / "reproductions"


@dataclass
class SourceSection:
    """`sources.<name>:` of reproduce.yaml: a run trained before the studies, whose folder feeds them."""

    experiment: str  # the source's experiment YAML (relative to the finding's folder)
    feeds: list[str]  # the study YAMLs that start from its weights


@dataclass
class SmokeSection:
    """`smoke:` of reproduce.yaml: the reduced variant CI runs."""

    seeds: int | list[int] | None = None  # the studies' seeds (a count or a list)
    grid: dict[str, Any] | None = None  # replaced values of the studies' grid axes
    set: list[str] | None = None  # overrides of every study's experiment (key=value)
    sources: list[str] | None = None  # overrides of every source's experiment


@dataclass
class Manifest:
    """reproduce.yaml: what a finding runs."""

    studies: list[str]  # the study YAMLs, in the order they run
    title: str | None = None
    claims: str = "claims.yaml"  # the claims file, committed before the full run
    smoke: SmokeSection = field(default_factory=SmokeSection)
    sources: dict[str, SourceSection] = field(default_factory=dict)


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
    smoke = {k: v for k, v in dataclasses.asdict(m.smoke).items() if v is not None}
    return Finding(folder.name, folder, m.title or folder.name, studies, folder / m.claims, smoke,
                   _sources(m.sources, folder, studies, manifest))


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


def train_sources(finding: Finding, smoke: bool, out: Path) -> dict[Path, list[str]]:
    """Train (or reuse, when finished) every source into `out/sources/<name>`; returns, per study YAML, the
    `backbone.weights` overrides pointing at the sources it is fed by."""
    sets = [*finding.smoke.get("sources", []), f"output_dir={out / 'runs'}", "tracking.mode=disabled"] if smoke else []
    feeds: dict[Path, list[str]] = {}
    for source in finding.sources:
        folder = out / "sources" / source.name
        if not (folder / "metrics.json").is_file():
            run(load_experiment(source.experiment, sets), folder)
        for study in source.feeds:
            feeds.setdefault(study, []).append(f"backbone.weights={folder.resolve()}")
    return feeds


def specs(finding: Finding, smoke: bool, out: Path, feeds: dict[Path, list[str]] | None = None) -> list[Any]:
    """The finding's studies, parsed (the smoke variant writes its runs under `out`); `feeds` adds the source
    weights to the studies that start from them."""
    feeds = feeds or {}
    if not smoke:
        return [load_study(path, feeds.get(path, [])) for path in finding.studies]
    changes = {k: v for k, v in finding.smoke.items() if k in ("seeds", "grid")}
    sets = [*finding.smoke.get("set", []), f"output_dir={out / 'runs'}", "tracking.mode=disabled"]
    return [load_study(path, [*sets, *feeds.get(path, [])], changes) for path in finding.studies]


def default_out(finding: Finding, smoke: bool) -> Path:
    return Path("runs") / "reproductions" / (finding.name + ("-smoke" if smoke else ""))


def results_folder(finding: Finding, smoke: bool, out: Path | None = None) -> Path:
    """Where a run's results go: the finding's committed `results/`, or the smoke variant's scratch folder."""
    return (out or default_out(finding, smoke)) / "results" if smoke else finding.folder / "results"


def reproduce(finding: Finding, smoke: bool = False, out: Path | None = None, run_studies: Any = None,
              ) -> tuple[list[Verdict], list[Path]]:
    """Run (or resume) every study of the finding, archive what they give (`archive.py`: trials and per-example
    predictions) and judge the finding from that archive alone; returns the verdicts and the files written.
    `run_studies(spec, url)` runs one study (default: without a progress display)."""
    out = out or default_out(finding, smoke)
    url = f"sqlite:///{out / 'studies.db'}"
    results = results_folder(finding, smoke, out)
    load_claims(finding.claims)  # a malformed claims file fails before hours of training
    names = []
    for spec in specs(finding, smoke, out, train_sources(finding, smoke, out)):
        (run_studies or run_study)(spec, url)
        names.append(spec.name)
    files = archive.export(names, open_storage(url, must_exist=True), results)
    verdicts, judged = judge(finding, results, track=True)
    return verdicts, files + judged


def judge(finding: Finding, results: Path, track: bool = False) -> tuple[list[Verdict], list[Path]]:
    """Each study's report and the claim checks (`claims.md`) from the results archive in `results` alone (no
    training, no storage, no run folders): the full run and `--rejudge` write the same bytes."""
    source, claims = load_claims(finding.claims)
    opened = archive.Archive(results)
    files: list[Path] = []
    for name in optuna.get_all_study_names(opened.storage):
        files += run_report(name, opened.storage, results / name, lookup=opened.lookups(name), track=track)[1]
    verdicts = check_claims(claims, None, opened.storage, opened.lookups)
    (results / "claims.md").write_text(f"# {finding.title}: claims\n\n{to_markdown(verdicts, source)}")
    return verdicts, [*files, results / "claims.md"]
