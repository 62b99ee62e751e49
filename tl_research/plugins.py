"""Plugins: a user's own modules that register strategies, backbone families, datasets, scores or export formats
with the package's registries, imported before any config that names their entries is read.

A plugin is a module name (`my_lab.freezing`, importable from sys.path) or a file path (`./my_strategy.py`). It is
named in an experiment or study YAML (`plugins: [...]`, a file path relative to the YAML), by `tlr --plugin`, in
`TLR_PLUGINS` (separated by os.pathsep), or by an installed package's entry point in the group `tl_research.plugins`.
Each is imported once per process; its record (the name and a digest of its source) travels with a study, a run
and an archive, so that every worker imports exactly the code the study was created with.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from tl_research.errors import ConfigWarning, UserError

ENV = "TLR_PLUGINS"
GROUP = "tl_research.plugins"

_LOADED: dict[str, dict[str, str]] = {}  # name -> {"name", "digest"}, in import order
_MODULES: dict[str, str] = {}  # module name -> the plugin's name (where listings say an entry comes from)
_ENTRY_POINTS_READ = False


def is_file(name: str) -> bool:
    """A file path (`./x.py`, `/abs/x.py`, `x.py`), not a module name."""
    return name.endswith(".py") or "/" in name or os.sep in name


def resolve(names: list[str] | None, base_dir: Path | None = None) -> list[str]:
    """`names` with each file path made absolute (relative to `base_dir`, then the working directory), so that a
    run folder and a study record where the file is, not where the command happened to run."""
    out = []
    for name in names or []:
        if not isinstance(name, str) or not name:
            raise UserError(f"plugins: {name!r} is neither a module name nor a .py file path")
        if is_file(name) and not Path(name).expanduser().is_absolute():
            here = base_dir / name if base_dir is not None else None
            name = str((here if here is not None and here.exists() else Path(name)).resolve())
        out.append(str(Path(name).expanduser()) if is_file(name) else name)
    return out


def _source_files(module: Any) -> list[Path]:
    """The files whose text is the plugin: the module's file, or every .py file of its package."""
    path = Path(module.__file__)
    return sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]


def _digest(files: list[Path], root: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def load(name: str, where: str = "plugins") -> dict[str, str]:
    """Import plugin `name` (once per process) and return its record; a plugin that cannot be imported is one line
    naming it and `where` it was named."""
    load_entry_points()
    if name in _LOADED:
        return _LOADED[name]
    try:
        if is_file(name):
            path = Path(name)
            if not path.is_file():
                raise UserError(f"{where}: plugin file {name} does not exist")
            module_name = f"tl_research_plugin_{path.stem}_{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses and pickling look their module up by name
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
        else:
            module = importlib.import_module(name)
    except UserError:
        raise
    except ImportError as exc:
        raise UserError(f"{where}: plugin {name!r} cannot be imported ({exc})") from None
    except Exception as exc:  # the plugin's own code failed: name it, with what it raised
        raise UserError(f"{where}: plugin {name!r} failed on import ({type(exc).__name__}: {exc})") from None
    files = _source_files(module)
    record = {"name": name, "digest": _digest(files, files[0].parent)}
    _LOADED[name] = record
    _MODULES[module.__name__] = name
    return record


def load_all(names: list[str] | None, where: str = "plugins") -> list[dict[str, str]]:
    """Import each of `names` (already resolved); their records."""
    return [load(name, where) for name in names or []]


def load_entry_points() -> None:
    """Import every installed package's `tl_research.plugins` entry point and `TLR_PLUGINS`, once per process."""
    global _ENTRY_POINTS_READ
    if _ENTRY_POINTS_READ:
        return
    _ENTRY_POINTS_READ = True
    for ep in entry_points(group=GROUP):
        load(ep.module, f"entry point {ep.name} ({GROUP})")
    load_all(resolve([n for n in os.environ.get(ENV, "").split(os.pathsep) if n]), ENV)


def loaded() -> list[dict[str, str]]:
    """The records of every plugin this process imported, in import order."""
    return list(_LOADED.values())


def require(records: list[dict[str, str]] | None, what: str, strict: bool = True) -> None:
    """Import the plugins `what` (a study, a run) was made with; one that is missing here is one line naming it.
    One whose source differs from the one recorded is too when `strict` (a worker must compute with the code the
    study was created with), else a warning (a report or a prediction can still read what was made)."""
    for record in records or []:
        mine = load(record["name"], f"{what}: its plugin")
        if mine["digest"] != record["digest"]:
            message = (f"{what}: plugin {record['name']} differs from the one it was made with (digest "
                       f"{mine['digest']} here, {record['digest']} recorded)")
            if strict:
                raise UserError(f"{message}; restore that version")
            warnings.warn(message, ConfigWarning, stacklevel=2)


def origin(module: str) -> str:
    """Where an entry defined in `module` comes from: `plugin <name>` or `built-in`."""
    for name, plugin in _MODULES.items():
        if module == name or module.startswith(f"{name}."):
            return f"plugin {plugin}"
    return "built-in"
