"""Study YAML: a base experiment plus a `study:` section (grid ablation or Optuna search), validated up front
so that bad input never touches the storage."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tl_research.config import Experiment, from_dict, load_experiment, read_yaml
from tl_research.errors import UserError


@dataclass
class ObjectiveConfig:
    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] = "maximize"


@dataclass
class StudyConfig:
    name: str = ""
    kind: Literal["grid", "search"] = "grid"
    # grid: config key -> list of values; every combination x every seed is one cell
    grid: Any = None
    # repeats per grid cell: a number of seeds (0..n-1) or an explicit list
    seeds: Any = 1
    # search: config key -> {type: float|int|categorical, low, high, log, choices}
    params: Any = None
    n_trials: int = 20
    timeout: float | None = None
    sampler: Literal["tpe", "random"] = "tpe"
    sampler_seed: int = 0
    pruner: Literal["median", "hyperband", "none"] = "median"
    objectives: list[ObjectiveConfig] | None = None
    storage: str | None = None
    # Optuna heartbeat (RDB storages): a worker silent for `grace_period` s has its trial failed and retried
    heartbeat_interval: int = 10
    grace_period: int = 60


# metrics a study may select on; test metrics are recorded, never optimised
SELECTABLE = {"val/acc", "val/loss", "train/loss", "throughput/train_samples_per_sec",
              "throughput/infer_samples_per_sec", "time/fit_seconds", "params/trainable", "memory/peak_mb"}


@dataclass
class StudySpec:
    name: str
    base: dict  # the experiment mapping every trial starts from
    config: StudyConfig
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)  # grid only: the params of every cell
    num_groups: int = 0

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def to_json(self) -> dict[str, Any]:
        import dataclasses

        return {"name": self.name, "base": self.base, "study": dataclasses.asdict(self.config)}


def set_key(data: dict, key: str, value: Any) -> dict:
    """Set dotted `key` in a nested mapping (a copy)."""
    out = copy.deepcopy(data)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"study: {key}: {part} is not a section")
    node[parts[-1]] = value
    return out


def experiment_for(base: dict, params: dict[str, Any]) -> Experiment:
    data = base
    for key, value in params.items():
        data = set_key(data, key, value)
    return load_experiment(data=data)


def _check_params(base: dict, params: dict[str, Any], where: str) -> Experiment:
    try:
        return experiment_for(base, params)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def seed_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) for s in value):
        return value
    raise UserError(f"study.seeds: expected a count >= 1 or a non-empty list of integers, got {value!r}")


def _grid_cells(cfg: StudyConfig, base: dict) -> list[dict[str, Any]]:
    if not isinstance(cfg.grid, dict) or not cfg.grid:
        raise UserError("study.grid: a grid study needs a mapping of config keys to lists of values")
    for key, values in cfg.grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"study.grid.{key}: expected a non-empty list of values, got {values!r}")
        for v in values:
            _check_params(base, {key: v}, f"study.grid.{key}")
    keys = list(cfg.grid)
    cells = [dict(zip(keys, combo)) for combo in itertools.product(*(cfg.grid[k] for k in keys))]
    return [{**cell, "seed": s} for cell in cells for s in seed_list(cfg.seeds)]


def _check_search(cfg: StudyConfig, base: dict, num_groups: int) -> None:
    if not isinstance(cfg.params, dict) or not cfg.params:
        raise UserError("study.params: a search study needs a mapping of config keys to distributions")
    for key, dist in cfg.params.items():
        where = f"study.params.{key}"
        if not isinstance(dist, dict) or dist.get("type") not in ("float", "int", "categorical"):
            raise UserError(f"{where}: expected {{type: float|int|categorical, ...}}, got {dist!r}")
        if dist["type"] == "categorical":
            if not isinstance(dist.get("choices"), list) or not dist["choices"]:
                raise UserError(f"{where}: categorical needs a non-empty list `choices`")
            for v in dist["choices"]:
                _check_params(base, {key: v}, where)
            continue
        if key == "freeze.depth":
            dist.setdefault("low", 0)
            dist.setdefault("high", num_groups)  # bounded by the backbone automatically
            if not 0 <= dist["low"] <= dist["high"] <= num_groups:
                raise UserError(f"{where}: bounds {dist['low']}..{dist['high']} are outside the backbone's "
                                f"0..{num_groups} layer groups")
        if "low" not in dist or "high" not in dist or not dist["low"] <= dist["high"]:
            raise UserError(f"{where}: needs low <= high")
        if dist.get("log") and dist["low"] <= 0:
            raise UserError(f"{where}: a log-scale range needs low > 0")
        for v in (dist["low"], dist["high"]):
            _check_params(base, {key: v}, where)


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Parse and validate a study YAML (`experiment:` path or mapping, optional `set:`, `study:`)."""
    raw = read_yaml(path)
    unknown = set(raw) - {"experiment", "set", "study"}
    if unknown:
        raise UserError(f"{sorted(unknown)[0]}: unknown key (allowed at the top of a study: experiment, set, study)")
    exp = raw.get("experiment")
    if isinstance(exp, str):
        exp_path = Path(exp) if Path(exp).is_absolute() else Path(path).parent / exp
        if not exp_path.exists():
            exp_path = Path(exp)  # relative to the working directory
        base = read_yaml(exp_path)
    elif isinstance(exp, dict):
        base = exp
    else:
        raise UserError("experiment: a study needs its base experiment (a YAML path or an inline mapping)")
    from tl_research.config import apply_overrides

    base = apply_overrides(copy.deepcopy(base), list(raw.get("set") or []) + list(overrides or []))
    first = load_experiment(data=base)  # the base itself must be valid
    cfg = from_dict(StudyConfig, raw.get("study"), "study.")
    if cfg.n_trials < 1:
        raise UserError("study.n_trials: must be >= 1")
    objectives = cfg.objectives or [ObjectiveConfig()]
    for o in objectives:
        if o.metric not in SELECTABLE:
            raise UserError(f"study.objectives: cannot select on {o.metric!r} (allowed: {', '.join(sorted(SELECTABLE))}"
                            "; test metrics are recorded, never optimised)")
    from tl_research.backbones import inspect_backbone

    num_groups = len(inspect_backbone(first.backbone.name, first.backbone.coarse)["groups"])
    spec = StudySpec(cfg.name or first.name, base, cfg, objectives, num_groups=num_groups)
    if cfg.kind == "grid":
        spec.cells = _grid_cells(cfg, base)
        for cell in spec.cells:
            exp = experiment_for(base, cell)
            if exp.freeze.depth is not None and exp.freeze.depth > num_groups:
                raise UserError(f"study.grid.freeze.depth: {exp.freeze.depth} is more than the backbone's "
                                f"{num_groups} layer groups")
    else:
        _check_search(cfg, base, num_groups)
    return spec


def load_study_json(data: dict[str, Any]) -> StudySpec:
    """The StudySpec a coordinator stored in the study (workers on other machines read it from there)."""
    cfg = from_dict(StudyConfig, data["study"], "study.")
    spec = StudySpec(data["name"], data["base"], cfg, cfg.objectives or [ObjectiveConfig()])
    if cfg.kind == "grid":
        spec.cells = _grid_cells(cfg, spec.base)
    return spec
