"""The experiment schema: one dataclass per section, YAML loading and `--set a.b=value` overrides.

Every validation error is a `UserError` whose message names the key path and what is allowed, so the CLI can
print one line (parsing lives in `schema.py`). Components own their options: the `freeze` section holds the common
keys (strategy, bn, l2sp) and the chosen strategy's own dataclass, parsed from the remaining `freeze.*` keys.

May import: the base, backbones, data, strategies, training. (Each component declares its own options.)
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tl_research import plugins
from tl_research.backbones.families import family_owners
from tl_research.backbones.options import BackboneConfig
from tl_research.data.options import AugmentConfig, DataConfig  # noqa: F401  (AugmentConfig: this module's API)
from tl_research.errors import ConfigWarning, UserError
from tl_research.schema import (  # noqa: F401  (from_dict, read_yaml, apply_overrides: part of this module's API)
    SEED,
    applies_when,
    apply_overrides,
    bounds,
    from_dict,
    json_schema,
    keyed,
    parse_fields,
    public_dict,
    read_yaml,
    unkeyed,
)
from tl_research.strategies.freeze_plan import STRATEGIES
from tl_research.training.head_options import HeadConfig
from tl_research.training.optim import L2SPConfig, OptimConfig
from tl_research.training.regularizers import RegularizeConfig

_range = bounds

COMMON_FREEZE_KEYS = ("strategy", "bn", "l2sp")


@dataclass
class FreezeConfig:
    """`freeze:`: the strategy's name, what BatchNorm does, L2-SP, and the strategy's own options (`options`, a
    registered strategy dataclass built from the other `freeze.*` keys)."""

    # the freezing strategy (tlr strategies lists them with their options)
    strategy: str = "full"
    # what BatchNorm layers of frozen groups do: frozen (eval mode, fixed), eval_stats, or train
    bn: Literal["frozen", "eval_stats", "train"] = "frozen"
    l2sp: L2SPConfig = field(default_factory=L2SPConfig)
    options: Any = None  # the strategy's own options

    def __post_init__(self) -> None:
        entry = STRATEGIES.get(self.strategy, "freeze.strategy")
        if self.options is None:
            self.options = entry()
        elif not isinstance(self.options, entry):
            raise ValueError(f"freeze.options: {type(self.options).__name__} is not the options of {self.strategy}")

    @classmethod
    def from_mapping(cls, data: Any, prefix: str = "freeze.") -> FreezeConfig:
        common = parse_fields(cls, _common(data, prefix), prefix, skip=("options",))
        name = common.get("strategy", "full")
        entry = STRATEGIES.get(name, "freeze.strategy")
        own = {f.name for f in dataclasses.fields(entry) if not f.metadata.get("derived")}
        every = _option_keys()
        chosen = {}
        for key, value in data.items():
            if key in COMMON_FREEZE_KEYS:
                continue
            if value is None and key in every:  # `--set freeze.depth=null` (or an empty YAML value): unset
                continue
            if key in own:
                chosen[key] = value
            elif key in every:
                # an option of another strategy (a study's base often sets depth for its depth cells): checked as
                # that strategy would (a typo inside it is named, not hidden by the warning), then dropped, so the
                # recorded config is what ran
                parse_fields(STRATEGIES.get(every[key][0], "freeze.strategy"), {key: value}, prefix)
                warnings.warn(f"{prefix}{key} is ignored by strategy {name} (an option of "
                              f"{', '.join(every[key])})", ConfigWarning, stacklevel=2)
            else:
                allowed = ", ".join([*COMMON_FREEZE_KEYS, *every])
                raise UserError(f"{prefix}{key}: unknown key (allowed in {prefix.rstrip('.')}: {allowed})")
        return cls(**common, options=from_dict(entry, chosen, prefix))

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "bn": self.bn, "l2sp": dataclasses.asdict(self.l2sp),
                **public_dict(self.options)}


def drop_other_strategy_options(data: dict, keep: set[str]) -> tuple[dict, list[str]]:
    """`data` without the freeze options that its selected strategy does not take, but those whose dotted key is in
    `keep` (set by the user on the command line: still refused): what switching strategy with `--set` leaves of a
    YAML written for another strategy. Returns the dropped keys too."""
    freeze = data.get("freeze")
    if not isinstance(freeze, dict):
        return data, []
    entry = STRATEGIES.get(freeze.get("strategy", "full"), "freeze.strategy")
    own = {f.name for f in dataclasses.fields(entry) if not f.metadata.get("derived")}
    every = _option_keys()
    dropped = [k for k in freeze if k in every and k not in own and f"freeze.{k}" not in keep]
    return {**data, "freeze": {k: v for k, v in freeze.items() if k not in dropped}}, dropped


def _common(data: Any, prefix: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{prefix.rstrip('.')}: expected a mapping of keys, got {type(data).__name__}")
    return {k: v for k, v in data.items() if k in COMMON_FREEZE_KEYS}


def _option_keys() -> dict[str, list[str]]:
    """Every strategy option key -> the strategies that take it, in registration order."""
    keys: dict[str, list[str]] = {}
    for name, entry in STRATEGIES.items():
        for f in dataclasses.fields(entry):
            if not f.metadata.get("derived"):
                keys.setdefault(f.name, []).append(name)
    return keys


@dataclass
class TrainerConfig:
    # training epochs (the most, with early stopping)
    max_epochs: int = field(default=5, metadata=_range(ge=1))
    # early stopping after this many epochs without a better trainer.monitor; None turns it off
    patience: int | None = field(default=3, metadata=_range(ge=1))
    # test the epoch with the best val/acc (true) or the last epoch's weights (false, as Keras' fit does)
    restore_best: bool = True
    # the validation metric that picks the best checkpoint and drives early stopping (val/acc: max, val/loss: min)
    monitor: Literal["val/acc", "val/loss"] = "val/acc"
    # optimizer step every n batches (an effective batch of n x data.batch_size); clip the gradient norm (None: off)
    accumulate_grad_batches: int = field(default=1, metadata=_range(ge=1))
    gradient_clip_val: float | None = field(default=None, metadata=_range(gt=0.0))
    # Lightning's accelerator, devices per node, and precision (bf16-mixed on recent GPUs)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = field(default=1, metadata=_range(ge=1))
    # machines; devices x num_nodes > 1 trains with DDP (one run folder, metrics.json and W&B run, from rank 0)
    num_nodes: int = field(default=1, metadata=_range(ge=1))
    # auto: DDP when devices x num_nodes > 1; ddp: say so explicitly
    strategy: Literal["auto", "ddp"] = "auto"
    # torch.compile the forward of the part that trains (the backbone, or the suffix on cached features)
    compile: bool = False
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"] = "32-true"
    # NHWC memory layout for image backbones (faster convolutions with bf16/fp16 on recent GPUs)
    channels_last: bool = False
    deterministic: bool = False  # Lightning's deterministic algorithms
    # stop as diverged ("training diverged", exit 2; a study's trial fails) when the training loss grows past this
    # factor of its first value (None: off); a non-finite training or validation loss always stops the run
    divergence_factor: float | None = field(default=100.0, metadata=_range(gt=1.0))
    # how often training metrics are logged (steps); a rich progress bar
    log_every_n_steps: int = field(default=10, metadata=_range(ge=1))
    progress_bar: bool = True


@dataclass
class TrackingConfig:
    # W&B: offline run files, online, or disabled (WANDB_MODE in the environment wins)
    mode: Literal["offline", "online", "disabled"] = "offline"
    # checkpoints as W&B model artifacts (with their scores): none, the best and last at the end, or every save
    log_model: Literal["false", "best", "all"] = "false"
    # W&B project and entity (WANDB_PROJECT / WANDB_ENTITY win)
    project: str = "tl_research"
    entity: str | None = None


@dataclass
class CacheConfig:
    """The feature cache of frozen-prefix outputs (see cache/)."""

    # auto: cache when the prefix is frozen for the whole run and nothing random touches it; off; refresh: recompute
    mode: Literal["auto", "off", "refresh"] = field(default="auto", metadata=unkeyed())
    # None: $TLR_CACHE_DIR, else ~/.cache/tl_research/features
    dir: str | None = field(default=None, metadata=unkeyed())
    # float16 halves disk and memory; float32 (default) keeps cached and uncached runs equal to float precision
    dtype: Literal["float32", "float16"] = field(default="float32", metadata=keyed())


@dataclass
class Experiment:
    # the run's name: runs go to output_dir/name/<time> unless --out
    name: str = "experiment"
    # the training seed (head init, shuffling, dropout)
    seed: int = field(default=0, metadata=SEED)
    output_dir: str = "runs"  # the root folder for runs
    # the user's own modules (names) or .py files (paths relative to the YAML) that register strategies, backbone
    # families, datasets, scores or export formats: imported before the rest of the experiment is read
    plugins: list[str] | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    regularize: RegularizeConfig = field(default_factory=RegularizeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self) -> None:
        legacy = self.freeze.l2sp
        if (legacy.alpha > 0 or legacy.beta > 0) and "l2sp" in self.regularize.terms:
            raise UserError("freeze.l2sp: set here and as regularize.l2sp; keep one (regularize.l2sp.alpha/beta)")

    def regularizers(self) -> list[Any]:
        """The terms added to the training loss: `regularize:`'s, and L2-SP from the older `freeze.l2sp.*` keys."""
        legacy = self.freeze.l2sp
        if legacy.alpha > 0 or legacy.beta > 0:
            from tl_research.training.regularizers.l2sp import L2SP

            return [L2SP(legacy.alpha, legacy.beta), *self.regularize.terms.values()]
        return list(self.regularize.terms.values())

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["backbone"], out["data"] = self.backbone.to_dict(), self.data.to_dict()
        out["freeze"] = self.freeze.to_dict()
        out["regularize"] = self.regularize.to_dict()
        return out


# ---------------------------------------------------------------- parsing


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None,
                    data: dict | None = None) -> Experiment:
    """Experiment from a YAML file (or mapping) plus `--set` overrides; its `plugins` are imported first (file
    paths relative to the YAML's folder, recorded absolute)."""
    raw = apply_overrides(read_yaml(path) if path is not None else dict(data or {}), overrides or [])
    return from_mapping(raw, Path(path).parent if path is not None else None)


def from_mapping(raw: dict[str, Any], base_dir: Path | None = None) -> Experiment:
    """An experiment mapping as an Experiment, after importing the plugins it names (their entries must be known
    before its strategy, backbone or dataset is checked)."""
    if isinstance(raw, dict) and raw.get("plugins") == []:
        raw = {**raw, "plugins": None}
    elif isinstance(raw, dict) and raw.get("plugins") is not None:
        if not isinstance(raw["plugins"], list):
            raise UserError("plugins: a list of module names or .py file paths")
        raw = {**raw, "plugins": plugins.resolve(raw["plugins"], base_dir)}
        plugins.load_all(raw["plugins"])
    return from_dict(Experiment, raw)


def dump_yaml(exp: Experiment) -> str:
    return yaml.safe_dump(exp.to_dict(), sort_keys=False)


def experiment_schema() -> dict[str, Any]:
    """JSON Schema of an experiment YAML; the freeze section lists every strategy's options (each applies to the
    strategies that own it), the backbone and data sections every family's and dataset's own options."""
    options: dict[str, Any] = {}
    for name, entry in STRATEGIES.items():
        one = json_schema(entry)["properties"]
        for key, node in one.items():
            options.setdefault(key, {**node, "description": f"freeze.strategy {name}"})
    from tl_research.data.registry import loader_owners

    own = {cls.__name__: owners.json_properties([f.name for f in dataclasses.fields(cls)])
           for cls, owners in ((BackboneConfig, family_owners()), (DataConfig, loader_owners()))}
    schema = json_schema(Experiment, {"FreezeConfig": {"strategy": {"enum": list(dict(STRATEGIES.items()))},
                                                       **options}, **own})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "tl_research experiment", **schema}
