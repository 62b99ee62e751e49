"""Typed experiment schema, YAML loading and `--set a.b=value` overrides.

Every validation error is a `UserError` whose message names the key path and what is allowed, so the CLI can
print one line. The schema is plain dataclasses; builders (not constructors) turn it into objects.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tl_research.errors import UserError


def _range(**bounds: float) -> dict:
    """Field metadata for numeric bounds: ge, gt, le, lt."""
    return {"range": bounds}


@dataclass
class BackboneConfig:
    name: str = "timm/mobilenetv2_100"
    # none | hub | offline | a local file or folder path
    weights: str = "offline"
    # timm: coarse groups (one per stage) instead of one per block
    coarse: bool = False
    # hf encoders: how token states become one vector
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    max_length: int = field(default=128, metadata=_range(ge=8, le=4096))


@dataclass
class HeadConfig:
    type: Literal["linear", "mlp"] = "linear"
    hidden: int = field(default=256, metadata=_range(ge=1))
    dropout: float = field(default=0.0, metadata=_range(ge=0.0, lt=1.0))


@dataclass
class LoraConfig:
    rank: int = field(default=8, metadata=_range(ge=1))
    alpha: float = field(default=16.0, metadata=_range(gt=0.0))
    dropout: float = field(default=0.0, metadata=_range(ge=0.0, lt=1.0))
    # module names or name suffixes; None: attention query/value for HF encoders, Linear + 1x1 convs for timm
    targets: list[str] | None = None
    # write export.pt with the adapters merged into the base weights at the end of the run
    merge: bool = False


@dataclass
class L2SPConfig:
    # alpha * ||theta - theta_0||^2 over trainable backbone weights, beta * ||theta||^2 over the head
    alpha: float = field(default=0.0, metadata=_range(ge=0.0))
    beta: float = field(default=0.0, metadata=_range(ge=0.0))


@dataclass
class FreezeConfig:
    strategy: str = "full"
    # depth strategy: number of frozen groups, or a fraction of the groups (exactly one of the two)
    depth: int | None = field(default=None, metadata=_range(ge=0))
    fraction: float | None = field(default=None, metadata=_range(ge=0.0, le=1.0))
    # what BatchNorm layers do (see strategies.py)
    bn: Literal["frozen", "eval_stats", "train"] = "frozen"
    # gradual_unfreeze: one more group from the top every n epochs; lower groups get lr / lr_factor per level
    every_n_epochs: int = field(default=1, metadata=_range(ge=1))
    lr_factor: float = field(default=1.0, metadata=_range(ge=1.0))
    # lp_ft: epochs of linear probing, then full fine-tuning at ft_lr (None: optim.lr / 10)
    probe_epochs: int = field(default=1, metadata=_range(ge=1))
    ft_lr: float | None = field(default=None, metadata=_range(gt=0.0))
    # llrd: group i of n gets lr * decay^(n - i)
    decay: float = field(default=0.75, metadata=_range(gt=0.0, le=1.0))
    # bitfit: train norm-layer parameters too, not only biases
    bitfit_norms: bool = True
    # surgical: the one group that trains (negative counts from the top, -1 = last)
    group: int | None = None
    lora: LoraConfig = field(default_factory=LoraConfig)
    l2sp: L2SPConfig = field(default_factory=L2SPConfig)


@dataclass
class AugmentConfig:
    """Train-time image augmentation (evaluation is never augmented); everything off by default."""

    random_resized_crop: bool = False
    crop_scale: float = field(default=0.5, metadata=_range(gt=0.0, le=1.0))  # smallest crop area share
    hflip: bool = False
    rotation: float = field(default=0.0, metadata=_range(ge=0.0, le=180.0))  # degrees
    shear: float = field(default=0.0, metadata=_range(ge=0.0, le=45.0))  # degrees
    zoom: float = field(default=0.0, metadata=_range(ge=0.0, lt=1.0))  # scale in [1 - zoom, 1 + zoom]


@dataclass
class DataConfig:
    name: str = "animal-mnist"
    # folder or file for datasets that read from disk (None: the dataset's default location)
    root: str | None = None
    # seeds the train/val/test split and the k-shot subsets, independent of the training seed
    split_seed: int = 0
    val_fraction: float = field(default=0.1, metadata=_range(gt=0.0, lt=1.0))
    test_fraction: float = field(default=0.2, metadata=_range(gt=0.0, lt=1.0))
    # k examples per class from the training split (nested across k), or a stratified share of it
    shots: int | None = field(default=None, metadata=_range(ge=1))
    fraction: float | None = field(default=None, metadata=_range(gt=0.0, le=1.0))
    # stratified caps on split sizes (None: everything the split holds)
    train_limit: int | None = field(default=None, metadata=_range(ge=1))
    eval_limit: int | None = field(default=None, metadata=_range(ge=1))
    # csv_text: column names (a .tsv file is read tab-separated); npz: array names
    text_column: str = "text"
    label_column: str = "label"
    x_key: str = "x"
    y_key: str = "y"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # image side in pixels (None: the backbone's pretrained input size)
    image_size: int | None = field(default=None, metadata=_range(ge=8, le=1024))
    batch_size: int = field(default=32, metadata=_range(ge=1))
    eval_batch_size: int | None = field(default=None, metadata=_range(ge=1))
    num_workers: int = field(default=0, metadata=_range(ge=0))


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = field(default=1e-3, metadata=_range(gt=0.0))
    weight_decay: float = field(default=0.01, metadata=_range(ge=0.0))
    momentum: float = field(default=0.9, metadata=_range(ge=0.0, lt=1.0))
    # the head's lr is lr * head_lr_mult
    head_lr_mult: float = field(default=1.0, metadata=_range(gt=0.0))
    # cosine / constant after warm-up; one_cycle; plateau: cut all lrs by plateau_factor when val/acc stalls
    schedule: Literal["cosine", "constant", "one_cycle", "plateau"] = "cosine"
    warmup_epochs: float = field(default=0.0, metadata=_range(ge=0.0))
    plateau_patience: int = field(default=1, metadata=_range(ge=0))
    plateau_factor: float = field(default=0.5, metadata=_range(gt=0.0, lt=1.0))
    label_smoothing: float = field(default=0.0, metadata=_range(ge=0.0, lt=1.0))


@dataclass
class TrainerConfig:
    max_epochs: int = field(default=5, metadata=_range(ge=1))
    # early stopping on val/acc; None turns it off
    patience: int | None = field(default=3, metadata=_range(ge=1))
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = field(default=1, metadata=_range(ge=1))
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"] = "32-true"
    # NHWC memory layout for image backbones (faster convolutions with bf16/fp16 on recent GPUs)
    channels_last: bool = False
    deterministic: bool = False
    log_every_n_steps: int = field(default=10, metadata=_range(ge=1))
    progress_bar: bool = True


@dataclass
class TrackingConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "tl_research"
    entity: str | None = None


@dataclass
class Experiment:
    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Return `value` as type `tp`, accepting the string forms a `--set` or YAML may give."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, f"{path}.")
    if tp is Any:
        return value  # free-form section (e.g. a study grid), validated by its own builder
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except UserError:
                pass
        raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise UserError(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise UserError(f"{path}: expected a non-empty list, got {value!r}")
        return [_coerce(v.strip() if isinstance(v, str) else v, item, f"{path}[{i}]") for i, v in enumerate(items)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{path}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UserError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise UserError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{path}: expected a string, got {value!r}")
    raise TypeError(f"unsupported schema type {tp!r} at {path}")


def _check_range(value: Any, bounds: dict, path: str) -> None:
    if value is None or not bounds:
        return
    ops = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for key, bound in bounds.items():
        test, sym = ops[key]
        if not test(value, bound):
            allowed = " and ".join(f"{ops[k][1]} {b}" for k, b in bounds.items())
            raise UserError(f"{path}: {value} is out of range (allowed: {allowed})")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (YAML) mapping, validating keys, types and ranges."""
    where = prefix.rstrip(".") or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UserError(f"{prefix}{unknown[0]}: unknown key (allowed in {where}: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        tp, path = hints[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{path}.")
        else:
            kwargs[name] = _coerce(value, tp, path)
            _check_range(kwargs[name], fields[name].metadata.get("range", {}), path)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML scalar)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected key=value, e.g. freeze.depth=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested mapping (validation happens when the mapping is parsed)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {text}: {'.'.join(keys[: i + 1])} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; unreadable or malformed files are a one-line UserError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"{p}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config keys at the top level")
    return data


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None,
                    data: dict | None = None) -> Experiment:
    """Experiment from a YAML file (or mapping) plus `--set` overrides."""
    raw = read_yaml(path) if path is not None else dict(data or {})
    return from_dict(Experiment, apply_overrides(raw, overrides or []))


def dump_yaml(exp: Experiment) -> str:
    return yaml.safe_dump(exp.to_dict(), sort_keys=False)
