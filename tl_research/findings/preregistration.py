"""Pre-registration read from git history: a finding's claims were fixed in a commit that comes before its pilot's
and its results' first commits, and its claims file is untouched since its results came.

The claims are compared parsed (YAML), so a comment — a design statement added to the header before the run — is
not a change of claims; any edit of the file after the first results is reported, comments included, because a
header written after the results could still speak of them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tl_research.errors import UserError


@dataclass(frozen=True)
class Commit:
    sha: str
    date: str  # committer date, YYYY-MM-DD HH:MM in the committer's time zone

    def __str__(self) -> str:
        return f"{self.sha[:7]} ({self.date})"


@dataclass(frozen=True)
class Record:
    """What the history says about one finding; `problems` is empty when its claims were pre-registered."""

    claims_fixed: Commit  # the commit that last changed the parsed claims
    claims_versions: int  # how many commits changed the parsed claims (1: written once)
    file_last: Commit  # the last commit that changed the claims file's text, comments included
    pilot: Commit | None  # the first commit that added a file under pilot/
    results: Commit | None  # the first commit that added a file under results/
    problems: list[str] = field(default_factory=list)


def _git(folder: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("--preregistration: needs git, which is not installed") from None
    if done.returncode != 0:
        raise UserError(f"--preregistration: git {args[0]} failed in {folder}: "
                        f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return done.stdout


def _commit(line: str) -> Commit:
    sha, date = line.split(" ", 1)
    return Commit(sha, date[:16])


def _parsed(text: str) -> object:
    """The claims a file's text holds; a text that does not parse stands for itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return ("does not parse", text)


def _first_added(folder: Path, homes: set[str], sub: str, order: dict[str, int]) -> Commit | None:
    """The first commit that added a file under `sub` of the finding's folder at any of its `homes` (the paths
    it had over its history, so a moved finding's results keep their first commit)."""
    found = [_commit(line) for home in homes for line in
             _git(folder, "log", "--diff-filter=A", "--format=%H %ci", "--", f":(top){home}/{sub}").splitlines()]
    return min(found, key=lambda c: order[c.sha], default=None)


def _claims_history(folder: Path, claims: Path) -> list[tuple[Commit, str]]:
    """(commit, the file's path at that commit) for every commit that touched the claims file, oldest first,
    following moves. A copy starts the history: claims written from another finding's file are new claims (git
    log --follow would otherwise walk on into the other finding's history)."""
    # newest first: git log --follow does not combine with --reverse
    text = _git(folder, "log", "--follow", "--name-status", "--format=@%H %ci", "--", str(claims.resolve()))
    history, commit = [], None
    for line in filter(None, text.splitlines()):
        if line.startswith("@"):
            commit = _commit(line[1:])
            continue
        status, *paths = line.split("\t")
        if status.startswith("D"):  # an earlier life of the path, deleted before these claims were written
            break
        history.append((commit, paths[-1]))
        if status[0] in "AC":
            break
    return history[::-1]


def check(folder: Path, claims: Path) -> Record:
    """The pre-registration record of the finding in `folder` whose claims file is `claims`."""
    if _git(folder, "rev-parse", "--is-shallow-repository").strip() == "true":
        raise UserError("--preregistration: this clone is shallow (git fetch --unshallow), so its history "
                        "cannot show when the claims were written")
    history = _claims_history(folder, claims)
    if not history:
        raise UserError(f"--preregistration: {claims} was never committed")
    order = {sha: i for i, sha in enumerate(_git(folder, "rev-list", "--reverse", "--topo-order", "HEAD").split())}
    versions, fixed, edited, text = [], history[0][0], history[0][0], None
    for commit, path in history:
        content = _git(folder, "show", f"{commit.sha}:{path}")
        edited = commit if content != text else edited  # a move alone is no edit
        text, parsed = content, _parsed(content)
        if not versions or parsed != versions[-1]:
            versions.append(parsed)
            fixed = commit
    homes = {str(Path(path).parent) for _, path in history}
    record = Record(fixed, len(versions), edited, _first_added(folder, homes, "pilot", order),
                    _first_added(folder, homes, "results", order))
    for name, later in (("pilot", record.pilot), ("results", record.results)):
        if later is not None and order[fixed.sha] >= order[later.sha]:
            record.problems.append(f"the claims were last changed in {fixed}, not before the {name}'s first "
                                   f"commit {later}")
    if record.results is not None and order[record.file_last.sha] > order[record.results.sha]:
        record.problems.append(f"the claims file was edited in {record.file_last}, after the results' first "
                               f"commit {record.results}")
    if versions[-1] != _parsed(claims.read_text()):
        record.problems.append("the claims in the working tree differ from the last commit's")
    return record


def to_text(record: Record) -> str:
    """The record in a few lines, ending with the verdict."""
    written = "written once" if record.claims_versions == 1 else f"{record.claims_versions} versions"
    lines = [f"claims fixed in {record.claims_fixed}, {written}; the file last changed in {record.file_last}",
             f"pilot first committed in {record.pilot or '— (no pilot)'}; results first committed in "
             f"{record.results or '— (no results yet)'}"]
    if record.problems:
        lines += [f"NOT pre-registered: {p}" for p in record.problems]
    else:
        lines.append("pre-registered: the claims come before the pilot and the results, and are unchanged since")
    return "\n".join(lines)
