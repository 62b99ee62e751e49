"""Study YAML: a base experiment plus a `study:` section (grid ablation or Optuna search), validated up front
so that bad input never touches the storage."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tl_research import plugins
from tl_research.backbones import inspect_backbone
from tl_research.backbones.families import foreign_options
from tl_research.config import Experiment, load_experiment
from tl_research.data import DATASETS
from tl_research.errors import ConfigWarning, UserError
from tl_research.redact import mask_url
from tl_research.schema import SEED, apply_overrides, bounds, from_dict, inapplicable, read_yaml, set_dotted
from tl_research.strategies import resolved
from tl_research.studies import prefilter, suites
from tl_research.studies.kinds import kind_of


@dataclass
class ObjectiveConfig:
    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] = "maximize"


@dataclass
class StudyConfig:
    name: str = ""
    kind: Literal["grid", "search", "tuned"] = "grid"
    # grid: config key -> list of values; every combination x every seed is one cell ("a+b": a tied axis, each
    # value set at both keys)
    grid: Any = None
    # repeats per grid cell: a number of seeds (0..n-1) or an explicit list
    seeds: Any = 1
    # config keys that take a cell's seed value (e.g. [seed, data.subset_seed]: a new support set per seed)
    seed_keys: list[str] = field(default_factory=lambda: ["seed"])
    # search: config key -> {type: float|int|categorical, low, high, log, choices}
    params: Any = None
    # tuned: the compared settings, a grid (config key -> list of values) whose every cell is one arm, or a list of
    # arms (each a mapping of its settings); each arm is tuned on validation with `tune` (the same space and budget
    # for every arm; a key only where it applies), then its best setting is re-run with `seeds` and tested
    arms: Any = None
    tune: Any = None
    n_trials: int = field(default=20, metadata=bounds(ge=1))
    timeout: float | None = field(default=None, metadata=bounds(gt=0.0))
    sampler: Literal["tpe", "random"] = "tpe"
    sampler_seed: int = field(default=0, metadata=SEED)
    pruner: Literal["median", "hyperband", "none"] = "median"
    objectives: list[ObjectiveConfig] | None = None
    storage: str | None = None
    # {score: logme, keep: N, per_class: 50}: rank the swept backbone.name / freeze.depth values by a
    # transferability score before training and run only the best N (prefilter.py)
    prefilter: Any = None
    # a benchmark suite (suites.py): a YAML path or its tasks inline; a grid study sweeps its tasks as the `task`
    # axis (study.grid.task: a subset), every task x grid cell x seed one cell
    suite: Any = None
    # Optuna heartbeat (RDB storages): a worker silent for `grace_period` s has its trial failed and retried
    heartbeat_interval: int = field(default=10, metadata=bounds(ge=1))
    grace_period: int = field(default=60, metadata=bounds(ge=1))
    # what each finished trial's folder keeps: all (best.ckpt and last.ckpt, as a fit does), best (best.ckpt's
    # weights alone: loadable by predict/export/head.from_run, about a third of a fine-tuned model's size), none
    checkpoints: Literal["all", "best", "none"] = "all"


# metrics a study may select on; test metrics are recorded, never optimised
SELECTABLE = {"val/acc", "val/loss", "train/loss", "throughput/train_samples_per_sec",
              "throughput/infer_samples_per_sec", "time/fit_seconds", "params/trainable", "memory/peak_mb"}


@dataclass
class TuneConfig:
    """`study.tune:` of a tuned study: the search space and budget every arm gets, judged on validation only."""

    params: Any = None  # config key -> a search parameter, as `study.params` of a search
    trials: int | None = field(default=None, metadata=bounds(ge=1))  # per arm (grid: the grid's size)
    sampler: Literal["tpe", "random", "grid"] = "tpe"  # grid: every parameter categorical, every combination


@dataclass
class StudySpec:
    """A study parsed once: the base experiment (mapping and Experiment), the study section, and for grids every
    cell's params and Experiment."""

    name: str
    base: dict  # the experiment mapping every trial starts from
    config: StudyConfig
    experiment: Experiment  # the base, parsed
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)  # grid only: the params of every cell
    num_groups: int = 0
    arms: list[dict[str, Any]] = field(default_factory=list)  # tuned only: each arm's settings
    tuned: list[list[str]] = field(default_factory=list)  # tuned only: per arm, the tune keys that apply to it
    tune: TuneConfig | None = None  # tuned only: the parsed `study.tune`
    suite: dict[str, Any] | None = None  # the parsed `study.suite`
    _cell_experiments: dict[str, Experiment] = field(default_factory=dict, repr=False)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def to_json(self) -> dict[str, Any]:
        study = dataclasses.asdict(self.config)
        if study.get("storage"):
            study["storage"] = mask_url(study["storage"])  # stored in the study itself: never a password
        return {"name": self.name, "base": self.base, "study": study}

    def experiment_for(self, params: dict[str, Any]) -> Experiment:
        """The experiment of one trial: a grid cell's (parsed when the spec was), or the base with search params."""
        found = self._cell_experiments.get(_cell_key(params))
        return found if found is not None else experiment_for(self.base, params, self.config.seed_keys,
                                                              suite=self.suite)


def cell_experiment(spec: StudySpec, cell: dict[str, Any], groups: dict[tuple[str, bool], int]) -> Experiment:
    """A grid cell's experiment, resolved against its own backbone's groups (`groups`: the counts known so far),
    kept on the spec."""
    exp = experiment_for(spec.base, cell, spec.config.seed_keys, suite=spec.suite)
    b = exp.backbone
    if (b.name, b.coarse) not in groups:
        groups[b.name, b.coarse] = len(inspect_backbone(b.name, b.coarse)["groups"])
    resolve_cell(exp, groups[b.name, b.coarse], "study.grid")
    spec._cell_experiments[_cell_key(cell)] = exp
    return exp


def _cell_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def experiment_for(base: dict, params: dict[str, Any], seed_keys: list[str] | None = None,
                   quiet: bool = False, suite: dict[str, Any] | None = None) -> Experiment:
    """`base` with every param set; `seed` goes to each of `seed_keys`, a suite's `task` to its data options. Keys
    the cell's strategy ignores warn, unless `quiet` or the cell sets the strategy (a strategy sweep's base holds
    every strategy's options)."""
    params = suites.expand(params, suite)
    data = base
    for key, value in params.items():
        # a grid key "a+b" ties keys: each value goes to both (e.g. keep the first n groups and freeze them)
        for target in (seed_keys or ["seed"]) if key == "seed" else key.split("+"):
            data = set_dotted(data, target, value, "study:")
    if "backbone.name" in params and isinstance(data.get("backbone"), dict):
        # a sweep over backbone families shares one base: each cell keeps the backbone options its family takes
        foreign = foreign_options(str(params["backbone.name"]))
        data = {**data, "backbone": {k: v for k, v in data["backbone"].items() if k not in foreign}}
    data = _drop_inapplicable(data, params)
    with warnings.catch_warnings():
        if quiet or "freeze.strategy" in params:
            warnings.simplefilter("ignore", ConfigWarning)
        return load_experiment(data=data)


def _drop_inapplicable(data: dict, params: dict[str, Any]) -> dict:
    """A sweep over an option others depend on (optim.name, optim.schedule, head.type, data.name) shares one base:
    each cell keeps the options that take effect with its own value (the base's others would be refused)."""
    hints = typing.get_type_hints(Experiment)
    for key in params:
        section, _, option = key.partition(".")
        cls = hints.get(section)
        if not (dataclasses.is_dataclass(cls) and isinstance(data.get(section), dict)):
            continue
        drop = [n for n in inapplicable(cls, data[section])
                if next(f for f in dataclasses.fields(cls) if f.name == n).metadata["applies"][0] == option]
        data = {**data, section: {k: v for k, v in data[section].items() if k not in drop}}
    return data


def check_params(base: dict, params: dict[str, Any], where: str, seed_keys: list[str] | None = None,
                  suite: dict[str, Any] | None = None) -> Experiment:
    try:
        return experiment_for(base, params, seed_keys, quiet=True, suite=suite)  # one by one: types, ranges only
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def seed_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32
                                                  for s in value):
        return value
    raise UserError(f"study.seeds: expected a count >= 1 or a non-empty list of integers, got {value!r}")


def grid_cells(cfg: StudyConfig, base: dict, where: str = "study.grid",
                suite: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    if not isinstance(cfg.grid, dict) or not cfg.grid:
        raise UserError(f"{where}: expected a mapping of config keys to lists of values")
    for key, values in cfg.grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
        for v in values:
            check_params(base, {key: v}, f"{where}.{key}", cfg.seed_keys, suite)
    keys = [k for k in cfg.grid if k != "seed"]
    cells = [dict(zip(keys, combo)) for combo in itertools.product(*(cfg.grid[k] for k in keys))]
    return [{**cell, "seed": s} for cell in cells for s in grid_seeds(cfg)]


def grid_seeds(cfg: StudyConfig) -> list[int]:
    """The seeds of every grid cell (or tuned arm): `study.seeds`, or a `seed` axis of the grid (each goes to every
    seed key)."""
    if "seed" not in (cfg.grid or {}):
        return seed_list(cfg.seeds)
    if cfg.seeds != 1:
        raise UserError("study.grid.seed: give the seeds either in study.seeds or as a grid key, not both")
    return seed_list(cfg.grid["seed"])


@dataclass
class SearchParam:
    """One parameter of a search space (`study.params.<key>`)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # float / int: the range (freeze.depth: 0 and the backbone's groups by default)
    high: float | None = None
    log: bool = False  # sample on a log scale (low > 0)
    choices: list[Any] | None = None  # categorical: the values


def check_space(params: Any, base: dict, num_groups: int, where_: str = "study.params") -> None:
    if not isinstance(params, dict) or not params:
        raise UserError(f"{where_}: a search space is a mapping of config keys to distributions")
    for key, dist in params.items():
        where = f"{where_}.{key}"
        param = from_dict(SearchParam, dist, f"{where}.")
        if param.type == "categorical":
            if param.choices is None or param.low is not None or param.high is not None or param.log:
                raise UserError(f"{where}: a categorical takes only `choices` (a non-empty list)")
            for v in param.choices:
                check_params(base, {key: v}, where)
            continue
        if param.choices is not None:
            raise UserError(f"{where}.choices: only a categorical takes choices ({param.type} takes low, high, log)")
        if key == "freeze.depth":
            dist.setdefault("low", 0)
            dist.setdefault("high", num_groups)  # bounded by the backbone automatically
            param.low = 0 if param.low is None else param.low
            param.high = num_groups if param.high is None else param.high
            if not 0 <= param.low <= param.high <= num_groups:
                raise UserError(f"{where}: bounds {dist['low']}..{dist['high']} are outside the backbone's "
                                f"0..{num_groups} layer groups")
        for bound in ("low", "high"):
            if getattr(param, bound) is None:
                raise UserError(f"{where}.{bound}: missing (a {param.type} range needs low and high)")
            if isinstance(dist[bound], str):  # YAML 1.1 reads 1e-3 as a string: stored as the number it is
                dist[bound] = getattr(param, bound)
        if not param.low <= param.high:
            raise UserError(f"{where}: needs low <= high")
        if param.log and param.low <= 0:
            raise UserError(f"{where}: a log-scale range needs low > 0")
        for v in (dist["low"], dist["high"]):
            check_params(base, {key: v}, where)


def resolve_cell(exp: Experiment, num_groups: int, where: str) -> None:
    """The strategy of `exp` against the backbone's groups, and its dataset's name: the checks a run makes, before
    anything runs."""
    DATASETS.get(exp.data.name, f"{where}: data.name")
    try:
        resolved(exp.freeze.options, num_groups, exp.optim.lr)
    except UserError as exc:
        raise UserError(f"{where}.{exc}" if str(exc).startswith("freeze.") else f"{where}: {exc}") from None


def build_spec(name: str, base: dict, cfg: StudyConfig) -> StudySpec:
    """Validate the study section against the base and parse every grid cell once."""
    swept = {k for section in (cfg.grid, cfg.params) if isinstance(section, dict) for k in section} | set(arm_keys(cfg))
    first = experiment_for(base, {}, quiet="freeze.strategy" in swept)  # the base itself must be valid
    DATASETS.get(first.data.name, "data.name")
    objectives = cfg.objectives or [ObjectiveConfig()]
    for o in objectives:
        if o.metric not in SELECTABLE:
            raise UserError(f"study.objectives: cannot select on {o.metric!r} (allowed: {', '.join(sorted(SELECTABLE))}"
                            "; test metrics are recorded, never optimised)")
    for key in cfg.seed_keys:
        check_params(base, {key: 0}, "study.seed_keys")
    num_groups = len(inspect_backbone(first.backbone.name, first.backbone.coarse)["groups"])
    spec = StudySpec(name or first.name, base, cfg, first, objectives, num_groups=num_groups)
    if cfg.prefilter is not None:
        prefilter.parse(cfg.prefilter)
    kind = kind_of(spec)
    if cfg.suite is not None and not kind.FIXED_CELLS:
        raise UserError(f"study.suite: a suite is swept by a grid study (this one is {cfg.kind})")
    kind.parse(spec, base, num_groups)
    if cfg.prefilter is not None:
        prefilter.candidates(spec)  # something to rank
    return spec


def _check_suite_data(spec: StudySpec) -> None:
    """Every suite task's data loads (folder there, files readable, pixels finite) and suits its cells' backbone:
    checked when a study is read from its YAML, before its storage is touched, not when a task's first cell runs
    (workers, which read the study from storage, do not load every task again)."""
    from tl_research.data.datamodule import load_data  # Lightning: only for a suite study

    modality: dict[tuple[str, bool], str] = {}
    checked: set[tuple[str, str]] = set()
    for cell in spec.cells:
        exp = spec.experiment_for(cell)
        b = exp.backbone
        if (b.name, b.coarse) not in modality:
            modality[b.name, b.coarse] = inspect_backbone(b.name, b.coarse)["modality"]
        task, takes = cell[suites.TASK], modality[b.name, b.coarse]
        if (task, takes) in checked:
            continue
        try:
            load_data(exp.data, takes)
        except UserError as exc:
            raise UserError(f"study.suite.tasks.{task}: {exc}") from None
        checked.add((task, takes))


def arm_keys(cfg: StudyConfig) -> list[str]:
    """The keys a tuned study's arms set (in first-seen order)."""
    arms = cfg.arms if isinstance(cfg.arms, list) else [cfg.arms] if isinstance(cfg.arms, dict) else []
    return list(dict.fromkeys(k for arm in arms if isinstance(arm, dict) for k in arm))


def load_study(path: str | Path, overrides: list[str] | None = None,
               study_changes: dict[str, Any] | None = None) -> StudySpec:
    """Parse and validate a study YAML (`experiment:` path or mapping, optional `set:`, `study:`).
    `study_changes` replace keys of the `study:` section (`grid`: only the listed axes' values, of the grid or of a
    tuned study's arms; `tune`: the listed keys; each only where the study has that section), e.g. a reduced smoke
    variant of a reproduction."""
    raw = read_yaml(path)
    if study_changes:
        section = dict(raw.get("study") or {})
        for key, value in study_changes.items():
            if key == "grid" and "arms" in section:
                key = "arms"  # a tuned study's arms are the grid of the settings it compares
            if key in ("grid", "arms", "tune") and isinstance(value, dict):
                if key not in section:  # (a tune change leaves a grid study alone)
                    continue
                current = dict(section[key] or {})
                # a grid (arms): replace the values of the axes this study has; tune: replace its keys (e.g. trials)
                value = {**current, **{k: v for k, v in value.items() if key == "tune" or k in current}}
            section[key] = value
        raw["study"] = section
    unknown = set(raw) - {"experiment", "set", "study", "plugins"}
    if unknown:
        raise UserError(f"{sorted(unknown)[0]}: unknown key (allowed at the top of a study: experiment, set, study, "
                        f"plugins)")
    exp = raw.get("experiment")
    exp_dir = Path(path).parent
    if isinstance(exp, str):
        exp_path = Path(exp) if Path(exp).is_absolute() else Path(path).parent / exp
        if not exp_path.exists():
            exp_path = Path(exp)  # relative to the working directory
        base, exp_dir = read_yaml(exp_path), exp_path.parent
    elif isinstance(exp, dict):
        base = exp
    else:
        raise UserError("experiment: a study needs its base experiment (a YAML path or an inline mapping)")
    if not isinstance(raw.get("plugins") or [], list) or not isinstance(base.get("plugins") or [], list):
        raise UserError("plugins: a list of module names or .py file paths")
    # the study's plugins and its experiment's, as absolute paths: every cell (and every worker) imports them all
    named = [*plugins.resolve(raw.get("plugins"), Path(path).parent), *plugins.resolve(base.get("plugins"), exp_dir)]
    if named:
        base = {**base, "plugins": list(dict.fromkeys(named))}
    base = apply_overrides(copy.deepcopy(base), list(raw.get("set") or []) + list(overrides or []))
    cfg = from_dict(StudyConfig, raw.get("study"), "study.")
    if cfg.suite is not None:  # stored inline: workers elsewhere read the tasks from the study, not a file
        cfg.suite = suites.load_suite(cfg.suite, Path(path).parent)
    spec = build_spec(cfg.name, base, cfg)
    if spec.suite is not None:
        _check_suite_data(spec)
    return spec


def load_study_json(data: dict[str, Any]) -> StudySpec:
    """The StudySpec a coordinator stored in the study (workers on other machines read it from there)."""
    return build_spec(data["name"], data["base"], from_dict(StudyConfig, data["study"], "study."))
