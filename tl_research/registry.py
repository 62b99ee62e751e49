"""Small named registries (backbone families, strategies, datasets, scores, export formats), the discovery of
entries that live one per module in a package, and the options an entry declares by its own signature.

A backbone family's builder or a dataset's loader declares its options by its signature (`Owners`): a plugin
family or dataset brings its options that way (as LightningCLI reads a class's `init_args`); they are keys of the
config section, checked against the parameter's type (`Annotated[int, bounds(ge=1)]` adds bounds) with the same
one-line key-path errors as every other key."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

from tl_research.errors import UserError
from tl_research.schema import check_range, coerce, type_schema

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry mapping whose lookup errors list what exists."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, key: str) -> T:
        """Entry `name`; `key` is the config path named in the error."""
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(
                f"{key}: unknown {self.kind} {name!r} (known: {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())


_DISCOVERED: set[str] = set()  # packages whose modules are imported already


def import_package(package: str, skip: set[str] | frozenset[str] = frozenset()) -> None:
    """Import every module of `package` except `skip`: entries that register themselves one per module (scores,
    export formats, backbone families) are found without a list kept by hand. The folder is listed once per
    process: registry lookups (every config read checks its backbone's family) call this each time."""
    if package in _DISCOVERED:
        return
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
    _DISCOVERED.add(package)


@functools.cache  # every config read checks its family's options: a signature is read once per callable
def signature_options(fn: Callable, skip: int) -> dict[str, inspect.Parameter]:
    """The options `fn` declares: its named parameters after the first `skip` (`**kwargs` declares none)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind in named]
    return {p.name: p for p in params[skip:]}


def _annotation(fn: Callable, param: inspect.Parameter) -> Any:
    """A parameter's type, evaluated in its function's module (postponed annotations are strings); Any where there
    is none or it names what only type checkers import."""
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return Any
    if isinstance(ann, str):
        try:
            ann = eval(ann, {"Annotated": Annotated, "Literal": Literal, **getattr(fn, "__globals__", {})})  # noqa: S307
        except Exception:  # noqa: BLE001  (an annotation that does not evaluate only loses its type check)
            return Any
    return ann


def _type(fn: Callable, param: inspect.Parameter) -> tuple[Any, dict]:
    """A parameter's type and its bounds (`Annotated[int, bounds(ge=1)]`)."""
    tp = _annotation(fn, param)
    if typing.get_origin(tp) is not Annotated:
        return tp, {}
    tp, *extras = typing.get_args(tp)
    return tp, next((m["range"] for m in extras if isinstance(m, dict) and "range" in m), {})


def parse_signature(fn: Callable, params: dict[str, inspect.Parameter], data: dict[str, Any],
                    prefix: str) -> dict[str, Any]:
    """`data`'s values for options `params` of `fn`, each checked against its parameter's type and bounds."""
    out = {}
    for key, value in data.items():
        tp, limits = _type(fn, params[key])
        try:
            out[key] = coerce(value, tp, f"{prefix}{key}")
        except TypeError:  # a type the YAML schema does not know (a path, a tuple): the callable checks it itself
            out[key] = value
        check_range(out[key], limits, f"{prefix}{key}")
    return out


@dataclass(frozen=True)
class Owners:
    """Registered callables `entries` (name -> callable) whose parameters after the first `skip` are options of
    config section `prefix` (`backbone.`, `data.`); `noun` names an entry's kind in errors."""

    entries: dict[str, Callable]
    skip: int
    prefix: str
    noun: str

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        entry = self.entries.get(name)
        return {} if entry is None else signature_options(entry, self.skip)

    def defaults(self, name: str) -> dict[str, Any]:
        """Entry `name`'s options with their defaults (None: required)."""
        return {k: None if p.default is p.empty else p.default for k, p in self.options(name).items()}

    def every(self) -> list[str]:
        """Every option some entry declares."""
        return sorted({k for name in self.entries for k in self.options(name)})

    def json_properties(self, fixed: list[str]) -> dict[str, Any]:
        """JSON Schema properties of the options besides `fixed` (editor completion for a plugin's own keys)."""
        out = {}
        for name, entry in self.entries.items():
            for key, param in self.options(name).items():
                if key not in fixed and key not in out:
                    out[key] = {**type_schema(_type(entry, param)[0]), "description": f"{self.noun}: {name}"}
        return out

    def parse(self, chosen: str, data: dict[str, Any], fixed: list[str]) -> dict[str, Any]:
        """`data`'s options besides the section's `fixed` keys, each checked against the callable declaring it:
        entry `chosen`'s where it takes the key, else the first that does (`check` then refuses it unless it is left
        at that default)."""
        out = {}
        for key, value in data.items():
            owner = next((n for n in (chosen, *self.entries) if key in self.options(n)), None)
            if owner is None:
                allowed = ", ".join([*fixed, *(k for k in self.every() if k not in fixed)])
                raise UserError(f"{self.prefix}{key}: unknown key (allowed in {self.prefix.rstrip('.')}: {allowed})")
            out |= parse_signature(self.entries[owner], self.options(owner), {key: value}, self.prefix)
        return out

    def check(self, chosen: str, options: dict[str, Any], label: str | None = None) -> dict[str, Any]:
        """The options of `options` that entry `chosen` (shown as `label`) takes. One only other entries take must
        be left at its default: set otherwise it would be silently ignored, so it is refused (one line naming the
        key); a required option of `chosen` left out is named too."""
        if chosen not in self.entries:
            return {}  # an unknown entry is reported where it is looked up
        accepted = self.options(chosen)
        for key, value in options.items():
            if key in accepted:
                continue
            owners = {n: p[key] for n in self.entries if key in (p := self.options(n))}
            if not owners:
                raise UserError(f"{self.prefix}{key}: unknown key (options of {self.noun}: {', '.join(self.every())})")
            if all(value != p.default for p in owners.values()):
                raise UserError(f"{self.prefix}{key}: {value!r} is an option of {' and '.join(owners)} {self.noun}; "
                                f"{label or chosen} does not take it (leave it unset)")
        missing = [k for k, p in accepted.items() if p.default is inspect.Parameter.empty and k not in options]
        if missing:
            raise UserError(f"{self.prefix}{missing[0]}: missing (required by {label or chosen})")
        return {k: v for k, v in options.items() if k in accepted}
