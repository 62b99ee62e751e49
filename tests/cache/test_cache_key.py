"""The feature cache's key is derived from the options the backbone, data and cache sections declare `keyed`: every
option of those sections declares whether it shapes a frozen prefix's output, each keyed option changes the key,
and no other option does."""

import dataclasses
import typing

import numpy as np
import pytest

from tests.conftest import tiny_experiment
from tl_research.backbones import build_backbone
from tl_research.backbones.families import FAMILIES, accepted_options
from tl_research.cache.features import cache_key
from tl_research.config import BackboneConfig, CacheConfig, Experiment, load_experiment
from tl_research.data.options import DataConfig
from tl_research.data.registry import DATASETS, DatasetInfo, RawDataset

SECTIONS = {"backbone": BackboneConfig, "data": DataConfig, "cache": CacheConfig}


def options():
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield section, f


def test_every_option_of_a_feature_shaping_section_declares_its_role():
    """A new option of the backbone, data or cache section must say (keyed / unkeyed in schema.py) whether it
    changes a cached row; one that does not say fails here, instead of silently reusing stale features."""
    undeclared = [f"{section}.{f.name}" for section, f in options() if "features" not in f.metadata]
    assert not undeclared, undeclared


def other_value(cls: type, f: dataclasses.Field, value):
    """A valid value of `f` different from `value`."""
    tp = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal or (args and typing.get_origin(args[0]) is typing.Literal):
        choices = typing.get_args(tp if typing.get_origin(tp) is typing.Literal else args[0])
        return next(c for c in choices if c != value)
    base = args[0] if args else tp
    if dataclasses.is_dataclass(value):
        first = dataclasses.fields(value)[0]
        return dataclasses.replace(value, **{first.name: other_value(type(value), first, getattr(value, first.name))})
    if base is bool:
        return not value
    if base is int:
        return 32 if value is None else value + 1
    if base is float:
        return 0.25 if value is None else value / 2
    if typing.get_origin(base) is list:
        return ["cat"]
    if f.name in ("shift",):
        return "blur:1"
    return "other" if value is None else value + "x"


@pytest.fixture(scope="module")
def parts():
    backbone = build_backbone("timm/test_efficientnet", "none")
    raw = RawDataset("tiny", "image", np.zeros((4, 8, 8), np.uint8), np.arange(4) % 2, ["a", "b"])
    return backbone, raw


def key_of(exp: Experiment, parts) -> dict:
    return cache_key(exp, *parts, k=2, weights="digest")


@pytest.mark.parametrize("section, f", list(options()), ids=lambda x: getattr(x, "name", x))
def test_a_keyed_option_changes_the_key_and_no_other_does(tmp_path, parts, monkeypatch, section, f):
    exp = load_experiment(data=tiny_experiment(tmp_path))
    value = None
    if f.metadata.get("flat"):  # a plugin family's or dataset's own options: one that declares `extra`
        monkeypatch.setitem(FAMILIES._entries, "own", lambda ident, weights, extra=1: None)
        monkeypatch.setitem(DATASETS._entries, "own", DatasetInfo("own", "image", lambda root, opts, extra=1: None))
        exp = dataclasses.replace(exp, **{section: dataclasses.replace(
            getattr(exp, section), name="own/any" if section == "backbone" else "own")})
        value = {"extra": 2}
    elif section == "backbone" and f.name not in accepted_options(exp.backbone.name) | {"name", "weights",
                                                                                        "keep_groups"}:
        exp = dataclasses.replace(exp, backbone=dataclasses.replace(exp.backbone, name="hf/any"))  # an hf option
    sub = getattr(exp, section)
    changed = dataclasses.replace(exp, **{section: dataclasses.replace(
        sub, **{f.name: value or other_value(type(sub), f, getattr(sub, f.name))})})
    assert getattr(changed, section) != sub  # the option really changed
    if f.metadata["features"]:
        assert key_of(changed, parts) != key_of(exp, parts), f"{section}.{f.name} is keyed but not in the key"
    else:
        assert key_of(changed, parts) == key_of(exp, parts), f"{section}.{f.name} is unkeyed but changes the key"
