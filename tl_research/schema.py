"""Typed option schemas: plain dataclasses validated from (YAML) mappings, with one-line key-path errors.

Every component declares its options as a dataclass whose fields carry their bounds (`bounds(ge=0)`); `from_dict`
turns a mapping into it, naming the key path and what is allowed on any error. A dataclass with a
`from_mapping(data, prefix)` classmethod parses itself (the freeze section picks its strategy's options that way).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from tl_research.errors import UserError


def bounds(**limits: float) -> dict:
    """Field metadata for numeric bounds: ge, gt, le, lt."""
    return {"range": limits}


def keyed(metadata: dict | None = None) -> dict:
    """Field metadata: this option of a component a frozen prefix's output may depend on (backbone, data, cache)
    does shape that output, so it is part of the feature cache's key (`features_options`). Every option of such a
    component declares `keyed` or `unkeyed` (a test checks), so a new option cannot be left out of the key by
    oversight."""
    return {**(metadata or {}), "features": True}


def unkeyed(metadata: dict | None = None) -> dict:
    """Field metadata: this option of such a component does not change a cached row (see `keyed`)."""
    return {**(metadata or {}), "features": False}


def features_options(obj: Any) -> dict[str, Any]:
    """The options of `obj` (an options dataclass, nested sections included) declared to shape frozen features."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and "features" not in f.metadata:
            out.update({f"{f.name}.{k}": v for k, v in features_options(value).items()})
        elif f.metadata.get("features") and f.metadata.get("flat"):  # a plugin's own options, keys of the section
            out.update(value)
        elif f.metadata.get("features"):
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# seeds feed numpy and torch generators: unsigned 32-bit
SEED = bounds(ge=0, lt=2**32)


def applies_when(key: str, values: tuple[Any, ...], metadata: dict | None = None) -> dict:
    """Field metadata: this option only takes effect when the sibling option `key` is one of `values` (a head's
    width for the mlp head, momentum for SGD); set otherwise it is refused, not silently ignored."""
    return {**(metadata or {}), "applies": (key, tuple(values))}


def inapplicable(cls: type, values: dict[str, Any]) -> list[str]:
    """Options of `values` (a mapping of `cls`'s fields) that would not take effect given the options they
    depend on (see applies_when; an option left out counts as its default)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = []
    for name, f in fields.items():
        if "applies" not in f.metadata or name not in values:
            continue
        key, allowed = f.metadata["applies"]
        selector = values.get(key, fields[key].default)
        if selector not in allowed:
            out.append(name)
    return out


def public_dict(obj: Any) -> dict[str, Any]:
    """An options dataclass as a plain mapping of its YAML keys (derived fields left out)."""
    return {f.name: (public_dict(v) if dataclasses.is_dataclass(v := getattr(obj, f.name)) else copy.deepcopy(v))
            for f in dataclasses.fields(obj) if not f.metadata.get("derived")}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, path: str) -> Any:
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
        options = [a for a in args if a is not type(None)]
        if isinstance(value, dict) and len(options) == 1 and dataclasses.is_dataclass(options[0]):
            return from_dict(options[0], value, f"{path}.")  # an optional section: its own key's error, not ours
        for arg in options:
            try:
                return coerce(value, arg, path)
            except UserError:
                pass
        raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: map back to a word allowed here
            value = next((w for w in (("on", "yes", "true") if value else ("off", "no", "false")) if w in allowed),
                         value)
        if value not in allowed:
            raise UserError(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")
        return value
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): coerce(v, item, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise UserError(f"{path}: expected a non-empty list, got {value!r}")
        return [coerce(v.strip() if isinstance(v, str) else v, item, f"{path}[{i}]") for i, v in enumerate(items)]
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
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        if number is None:
            raise UserError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise UserError(f"{path}: {number} is not a finite number")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{path}: expected a string, got {value!r}")
    raise TypeError(f"unsupported schema type {tp!r} at {path}")


def check_range(value: Any, limits: dict, path: str) -> None:
    if value is None or not limits:
        return
    ops = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for key, bound in limits.items():
        test, sym = ops[key]
        if not test(value, bound):
            allowed = " and ".join(f"{ops[k][1]} {b}" for k, b in limits.items())
            raise UserError(f"{path}: {value} is out of range (allowed: {allowed})")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (YAML) mapping, validating keys, types and ranges."""
    if hasattr(cls, "from_mapping"):
        return cls.from_mapping(data, prefix)
    return cls(**parse_fields(cls, data, prefix))


def parse_fields(cls: type, data: Any, prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The validated constructor arguments of dataclass `cls` found in mapping `data` (fields in `skip` are not
    YAML keys, nor are fields marked `derived`: values a component computes for itself)."""
    where = prefix.rstrip(". :") or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip and not f.metadata.get("derived")}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UserError(f"{prefix}{unknown[0]}: unknown key (allowed in {where}: {', '.join(fields)})")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{prefix}{missing[0]}: missing (required in {where})")
    kwargs = {}
    for name, value in data.items():
        tp, path = hints[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{path}.")
        else:
            kwargs[name] = coerce(value, tp, path)
            check_range(kwargs[name], fields[name].metadata.get("range", {}), path)
    for name in inapplicable(cls, kwargs):
        if kwargs[name] != fields[name].default:  # the default is what every written config.yaml holds
            key, allowed = fields[name].metadata["applies"]
            raise UserError(f"{prefix}{name}: takes effect only when {prefix}{key} is {' or '.join(map(str, allowed))} "
                            f"(here {kwargs.get(key, fields[key].default)}); leave it unset")
    return kwargs


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


def set_dotted(data: dict, key: str, value: Any, where: str = "--set") -> dict:
    """A copy of nested mapping `data` with dotted `key` set to `value` (sections are created as needed)."""
    out = copy.deepcopy(data)
    node, parts = out, key.split(".")
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{where} {key}: {'.'.join(parts[: i + 1])} is not a section")
    node[parts[-1]] = value
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`data` with every `key=value` override set (validation happens when the mapping is parsed)."""
    for text in overrides:
        keys, value = parse_override(text)
        data = set_dotted(data, ".".join(keys), value)
    return data



class DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DuplicateKey(f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; unreadable or malformed files are a one-line UserError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"{p}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKey as exc:
        raise UserError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config keys at the top level")
    return data




def json_schema(cls: type, extra: dict[str, dict] | None = None) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of option dataclass `cls` for editor completion: types, allowed words, bounds
    and defaults; `extra` adds properties to nested sections by key path (the freeze section's strategy options)."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("derived") or f.name == "options":
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            props[f.name] = json_schema(tp, extra)
            continue
        node = type_schema(tp)
        for key, bound in f.metadata.get("range", {}).items():
            node[{"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}[key]] = bound
        if f.default is not dataclasses.MISSING:
            node["default"] = f.default
        props[f.name] = node
    props.update((extra or {}).get(cls.__name__, {}))
    return {"type": "object", "properties": props, "additionalProperties": False}


def type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [{"type": "null"} if a is type(None) else type_schema(a) for a in typing.get_args(tp)]}
    if origin is list:
        return {"type": "array", "items": type_schema(typing.get_args(tp)[0])}
    return {int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"},
            bool: {"type": "boolean"}}.get(tp, {})
