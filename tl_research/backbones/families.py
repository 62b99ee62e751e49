"""Backbone families behind one registry: `timm/<name>` and `hf/<id or folder>`, each one module of this package that
registers its builder (`register_family`); a family's options are its builder's keyword arguments (imported through
`tl_research.backbones`)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_research.errors import UserError
from tl_research.registry import Owners, Registry, import_package
from tl_research.run_folder import watched

if TYPE_CHECKING:  # torch loads with the first backbone built: reading a config (which checks its family) must not
    from tl_research.backbones.base import Backbone

FAMILIES: Registry[Callable[..., Backbone]] = Registry("backbone family")


# the modules of this package that are not family registrations (hf and timm are the families' model code, which
# their registrations hf_family and timm_family import when the first backbone is built)
_MACHINERY = frozenset({"base", "families", "hf", "hf_classifier", "offline", "options", "runs", "text_pooling",
                        "timm"})


def register_family(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a family's builder `(ident, weights, **its options) -> Backbone` as `name/<ident>`: its signature
    declares the family's options. The registering module is imported by every config read, so it must stay
    cheap: torch and the family's framework load when the builder first runs."""
    return FAMILIES.register(name)


def families() -> list[tuple[str, Callable[..., Backbone]]]:
    """Every family (each family module of this package is imported once, on the first call)."""
    import_package("tl_research.backbones", _MACHINERY)
    return FAMILIES.items()


# the last backbones loaded in this process, as pristine templates: a study's cells (and a notebook's reruns) get a
# fresh copy in milliseconds instead of loading and converting the weight files again
_TEMPLATES: dict[tuple, tuple[Any, Backbone]] = {}


def _stamp(name: str, weights: str) -> Any:
    """What must not have changed for a template to be reused: local weight files and model folders."""
    paths = [Path(p).expanduser() for p in (weights, name.partition("/")[2]) if p not in ("none", "hub", "offline")]
    # a run folder: its metrics and the checkpoint they report
    paths += [q for p in paths[:1] for q in watched(p)]
    return tuple((str(p), p.stat().st_mtime_ns) for p in paths if p.exists())


def family_owners() -> Owners:
    """The families as owners of the `backbone.*` options their builders declare (after ident and weights)."""
    return Owners(dict(families()), 2, "backbone.", "backbones")


def option_names() -> list[str]:
    """Every option some family's builder takes (the `backbone.*` keys besides name, weights and keep_groups)."""
    return family_owners().every()


def accepted_options(name: str) -> set[str]:
    """The options backbone `name`'s family takes (none for an unknown family: build_backbone reports it)."""
    return set(family_owners().options(name.partition("/")[0]))


def foreign_options(name: str) -> set[str]:
    """The backbone options some family takes and backbone `name`'s does not: what a sweep or ranking over several
    families drops (or resets) when it switches one base experiment to `name`."""
    return set(option_names()) - accepted_options(name)


def parse_options(name: str, data: dict[str, Any], fixed: list[str]) -> dict[str, Any]:
    """`data`'s family options besides the section's `fixed` keys (a plugin family's own), each checked against
    the builder that declares it."""
    return family_owners().parse(name.partition("/")[0], data, fixed)


def family_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of `options` that backbone `name`'s family takes; one only another family takes must be left at
    its default (set, it would be silently ignored: refused with one line naming the key)."""
    return family_owners().check(name.partition("/")[0], options, name)


def build_backbone(name: str, weights: str = "offline", **options: Any) -> Backbone:
    """Backbone `family/ident` with the requested weights; `options` the family takes (timm: coarse; hf: pooling,
    max_length, layers), others left at their defaults (see family_options). Errors are UserErrors naming the
    config key. Random weights (`none`) are drawn
    anew on every call, from the global torch seed."""
    family, sep, ident = name.partition("/")
    if not sep or not ident:
        raise UserError(f"backbone.name: {name!r} must look like timm/<model> or hf/<model id or folder>")
    families()
    builder = FAMILIES.get(family, "backbone.name")
    kwargs = family_options(name, options)
    import torch

    if weights == "none" or torch.empty(0).device.type != "cpu":
        return builder(ident, weights, **kwargs)
    key, stamp = (name, weights, tuple(sorted(kwargs.items()))), _stamp(name, weights)
    hit = _TEMPLATES.get(key)
    if hit is None or hit[0] != stamp:
        if len(_TEMPLATES) >= 2:
            _TEMPLATES.pop(next(iter(_TEMPLATES)))
        _TEMPLATES[key] = hit = (stamp, builder(ident, weights, **kwargs))
    return _copy(hit[1])


def _copy(template: Backbone) -> Backbone:
    """A deep copy that shares the (read-only) tokenizer."""
    spec = template.preprocessing
    shared = {id(spec.tokenizer): spec.tokenizer} if hasattr(spec, "tokenizer") else {}
    return copy.deepcopy(template, shared)


def inspect_backbone(name: str, coarse: bool = False) -> dict[str, Any]:
    """Layer groups of `name` in freeze order, and the inputs it takes (image or text): structure only (built on
    the meta device: no weights, no memory)."""
    import torch

    with torch.device("meta"):
        backbone = build_backbone(name, "none", coarse=coarse)
    groups = backbone.layer_groups()
    return {"backbone": name, "modality": backbone.modality,
            "num_params": sum(p.numel() for p in backbone.parameters()),
            "groups": [{"index": g.index, "name": g.name, "num_params": g.num_params} for g in groups]}
