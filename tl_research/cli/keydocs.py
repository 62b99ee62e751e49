"""Every config key with its default and meaning, read from the config dataclasses themselves (the comment above a
field, or at the end of its line; a field without one shares the comment above the field line just before it), so
`tlr fit --help` and `tlr config --keys` cannot drift from the code."""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any

from tl_research import plugins
from tl_research.backbones.families import family_owners
from tl_research.config import Experiment
from tl_research.registry import Owners
from tl_research.strategies.freeze_plan import STRATEGIES
from tl_research.training.regularizers import regularizers

FIELD = re.compile(r"\s*(\w+)\s*:\s*[^=#]+(?:=.*?)?(?:#\s*(.*))?$")


@dataclass(frozen=True)
class KeyDoc:
    key: str
    default: Any
    meaning: str


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in `cls`'s source."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    pending: list[str] = []
    previous = ""  # the comment of the field on the line just before
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text[1:].strip())
            continue
        m = FIELD.match(line)
        if m and m.group(1) in names and not text.startswith(("def ", "return")):
            block, inline = " ".join(pending), m.group(2) or ""
            out[m.group(1)] = " ".join([block, inline]).strip() or previous
            previous = block or (previous if not inline else "")  # a line's own comment covers only that line
        elif not text.startswith(("field(", ")")):
            previous = ""
        pending = []
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def section_keys(cls: type, prefix: str = "") -> list[KeyDoc]:
    """The keys of dataclass `cls` (nested sections flattened), in declaration order."""
    comments = field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("derived") or f.name == "options":
            continue
        default = _default(f)
        if dataclasses.is_dataclass(default):
            out += section_keys(type(default), f"{prefix}{f.name}.")
        else:
            out.append(KeyDoc(prefix + f.name, default, comments.get(f.name, "")))
    return out


def experiment_keys() -> list[KeyDoc]:
    """Every experiment key; `freeze.*` strategy options say which strategies take them."""
    out = section_keys(Experiment)
    options: dict[str, KeyDoc] = {}
    takers: dict[str, list[str]] = {}
    for name, entry in STRATEGIES.items():
        for doc in section_keys(entry, "freeze."):
            options.setdefault(doc.key, doc)
            takers.setdefault(doc.key, []).append(name)
    at = next(i for i, d in enumerate(out) if not d.key.startswith(("name", "seed", "output_dir", "backbone.",
                                                                      "head.", "freeze.")))
    extra = [KeyDoc(k, d.default, f"[{', '.join(takers[k])}] {d.meaning}".strip()) for k, d in options.items()]
    # each regularizer's options, under its name (a term is on once it is named: `regularize: {bss: {}}`)
    terms = [d for name, entry in regularizers() for d in section_keys(entry, f"regularize.{name}.")]
    out = out[:at] + extra + terms + out[at:]
    from tl_research.data.registry import loader_owners

    # a plugin family's or dataset's own options, after its section's keys
    for owners in (family_owners(), loader_owners()):
        last = max(i for i, d in enumerate(out) if d.key.startswith(owners.prefix))
        out[last + 1:last + 1] = _own_keys(owners, {d.key for d in out})
    return out


def _own_keys(owners: Owners, known: set[str]) -> list[KeyDoc]:
    """The options entries declare by their signatures that are not section keys already (a plugin's)."""
    out: dict[str, KeyDoc] = {}
    for name in owners.entries:
        for key, default in owners.defaults(name).items():
            if owners.prefix + key not in known and owners.prefix + key not in out:
                out[owners.prefix + key] = KeyDoc(owners.prefix + key, default, f"[{owners.noun}: {name}]")
    return list(out.values())


def strategy_rows() -> list[dict[str, Any]]:
    """Every registered strategy: its name, what it does (its docstring's first sentence) and its own options
    (`freeze.<key>` with default and meaning), as `tlr strategies` lists them."""
    return [_row(name, entry, "freeze.") for name, entry in STRATEGIES.items()]


def regularizer_rows() -> list[dict[str, Any]]:
    """Every registered regularizer, as strategy_rows (options under `regularize.<name>.`)."""
    return [_row(name, entry, f"regularize.{name}.") for name, entry in regularizers()]


def _row(name: str, entry: type, prefix: str) -> dict[str, Any]:
    doc = " ".join((entry.__doc__ or "").split())
    first = re.split(r"(?<!\bal)(?<!\bSec)(?<!\be\.g)\.\s", doc, maxsplit=1)[0].rstrip(".")
    options = [{"key": d.key, "default": d.default, "meaning": d.meaning} for d in section_keys(entry, prefix)]
    return {"name": name, "description": f"{first}." if first else "", "from": plugins.origin(entry.__module__),
            "options": options}


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def keys_text(width: int = 100) -> str:
    """The key list as plain text (for --help)."""
    lines = []
    for d in experiment_keys():
        head = f"  {d.key} = {_shown(d.default)}"
        lines.append(head)
        lines += textwrap.wrap(d.meaning, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def keys_markdown() -> str:
    """The key list as a markdown table (README's "Configuration" table is this, checked by a test)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for d in experiment_keys():
        meaning = d.meaning.replace("|", "\\|")
        rows.append(f"| `{d.key}` | `{_shown(d.default)}` | {meaning} |")
    return "\n".join(rows) + "\n"
