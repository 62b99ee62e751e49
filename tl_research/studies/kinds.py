"""Study kinds (`study.kind`): each one module implementing `StudyKind` (grid.py, search.py, tuned.py); nothing
outside them branches on a kind's name. A fourth kind (a successive-halving race, an advise race) is one more
module and one more entry in `MODULES`.

A kind's module is imported when a study of that kind is first read (by name, as the CLI imports its commands),
so that reading a grid study's YAML loads no sampler it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import optuna

# a StudySpec (studyspec.py, prefilter.py and the kind modules import this module, so it imports none of them)
StudySpec = Any

MODULES = {"grid": "tl_research.studies.grid", "search": "tl_research.studies.search",
           "tuned": "tl_research.studies.tuned"}


class StudyKind(Protocol):
    """What a study kind decides: how its section is parsed, where its trials come from, and how it is counted."""

    QUEUED: bool  # trials come from a queue the workers claim (else one sampler draws them until n_trials)
    FIXED_CELLS: bool  # every trial is known when the study is created (a suite and a Slurm array need that)
    SEARCHES: bool  # its trials are one sampler's search over one space (optimisation history, importances)

    def parse(self, spec: StudySpec, base: dict[str, Any], num_groups: int) -> None:
        """Check the kind's part of the study section against the base and fill the spec (cells, arms, space)."""

    def swept(self, spec: StudySpec) -> dict[str, list[Any]]:
        """The values the study sweeps per key, as far as they are listed (what a prefilter ranks)."""

    def suggest(self, trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
        """The settings of `trial` (a claimed cell's fixed values, or drawn by the sampler)."""

    def tuning(self, trial: optuna.Trial) -> bool:
        """A selection trial: scored on validation only (never tested) and pruned by `should_prune`."""

    def prunes(self, trial: optuna.Trial) -> bool:
        """Whether `trial` may be pruned at all (an ablation cell or a seed run always runs to the end)."""

    def should_prune(self, trial: optuna.Trial) -> bool:
        """The pruner's decision on `trial` at its last report."""

    def cell(self, trial: optuna.Trial) -> dict[str, Any]:
        """What the study knows of the trial beyond its settings (into the W&B config)."""

    def prepare(self, study: optuna.Study, spec: StudySpec, record: dict[str, Any] | None) -> int:
        """Queue what the study starts with (`record`: its prefilter's, or None); returns how many were queued."""

    def next_phase(self, study: optuna.Study, spec: StudySpec) -> int:
        """Queue the next phase once the current one has finished; returns how many were queued (0: none)."""

    def total(self, spec: StudySpec) -> int:
        """The trials the whole study runs."""

    def expected(self, spec: StudySpec) -> int | None:
        """The tested trials its report should find (None: as many as ran)."""


def kind_of(spec: StudySpec) -> StudyKind:
    """The kind of `spec` (its `study.kind`), its module imported on first use (a module is the kind: its functions
    and constants implement the protocol)."""
    return cast(StudyKind, importlib.import_module(MODULES[spec.config.kind]))

