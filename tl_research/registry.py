"""Small named registries (backbone families, strategies, datasets, scores, export formats), and the discovery of
entries that live one per module in a package."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from tl_research.errors import UserError

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
