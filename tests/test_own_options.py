"""A plugin's backbone family or dataset brings its own options: its builder's or loader's signature declares them
(`backbone.<option>`, `data.<option>`), checked with the same one-line key-path errors as every other key, recorded
in config.yaml, in the feature cache's key (a family's) and passed to the builder or loader."""

from typing import Annotated, Literal

import numpy as np
import pytest
import yaml

import tl_research
from tests.conftest import tiny_experiment
from tl_research.backbones.families import FAMILIES
from tl_research.backbones.options import BackboneConfig
from tl_research.cli.keydocs import experiment_keys
from tl_research.config import dump_yaml, experiment_schema
from tl_research.data.registry import DATASETS, DatasetInfo, RawDataset, list_datasets
from tl_research.errors import UserError
from tl_research.pipeline import build_backbone_from
from tl_research.schema import bounds, features_options

CALLS: list[dict] = []


def _labx(ident, weights, coarse: bool = False, drop_rate: Annotated[float, bounds(ge=0.0, lt=1.0)] = 0.0,
          tap: Literal["pre", "post"] = "post"):
    """timm models under a lab's name, with options of its own."""
    CALLS.append({"drop_rate": drop_rate, "tap": tap})
    return FAMILIES.get("timm", "backbone.name")(ident, weights, coarse=coarse)


def _rings(root, options, count: int, scale: float = 1.0):
    """Two classes of constant images, `count` of each (a required option)."""
    labels = np.arange(2 * count) % 2
    images = np.broadcast_to((scale * 100 * (labels + 1)).astype(np.uint8)[:, None, None, None], (2 * count, 32, 32, 3))
    return RawDataset("lab-rings", "image", images.copy(), labels, ["in", "out"])


@pytest.fixture
def lab(monkeypatch):
    monkeypatch.setitem(FAMILIES._entries, "labx", _labx)
    monkeypatch.setitem(DATASETS._entries, "lab-rings", DatasetInfo("lab-rings", "image", _rings))
    CALLS.clear()


def _exp(tmp_path, **sections):
    return tl_research.load_experiment(data=tiny_experiment(tmp_path, **sections))


def test_a_plugin_familys_options_are_backbone_keys_checked_by_its_signature(tmp_path, lab):
    exp = _exp(tmp_path, backbone={"name": "labx/test_efficientnet", "drop_rate": "0.25", "tap": "pre"})
    assert exp.backbone.options == {"drop_rate": 0.25, "tap": "pre"}  # "0.25" as a --set gives it: a number
    again = tl_research.load_experiment(data=yaml.safe_load(dump_yaml(exp)))
    assert again == exp and yaml.safe_load(dump_yaml(exp))["backbone"]["drop_rate"] == 0.25
    # the family's options shape its features: in the cache's key, and nothing new there for every other backbone
    assert features_options(exp.backbone)["drop_rate"] == 0.25
    assert set(features_options(_exp(tmp_path).backbone)) == {"name", "coarse", "keep_groups", "pooling",
                                                             "max_length", "layers"}
    build_backbone_from(exp)
    assert CALLS == [{"drop_rate": 0.25, "tap": "pre"}]

    for backbone, message in [
        ({"drop_rate": 1.5}, "backbone.drop_rate: 1.5 is out of range (allowed: >= 0.0 and < 1.0)"),
        ({"tap": "mid"}, "backbone.tap: 'mid' is not allowed (allowed: pre, post)"),
        ({"drop_rat": 0.1}, "backbone.drop_rat: unknown key (allowed in backbone: name, weights, coarse, "
                            "keep_groups, pooling, max_length, layers, drop_rate, tap)"),
        ({"name": "timm/test_efficientnet", "drop_rate": 0.1},
         "backbone.drop_rate: 0.1 is an option of labx backbones; timm/test_efficientnet does not take it"),
    ]:
        with pytest.raises(UserError, match=f"^{message}".replace("(", r"\(").replace(")", r"\)")
                           .replace(".", r"\.")):
            _exp(tmp_path, backbone={"name": "labx/test_efficientnet", **backbone})
    # an option left at the family's default is no error on another family (a sweep over families sets it)
    assert _exp(tmp_path, backbone={"drop_rate": 0.0}).backbone.options == {"drop_rate": 0.0}
    with pytest.raises(UserError, match=r"backbone\.nope: unknown key \(options of backbones: coarse, drop_rate,"):
        BackboneConfig(name="labx/test_efficientnet", weights="none", options={"nope": 1})


def test_a_plugin_datasets_options_reach_its_loader_in_a_real_run(tmp_path, lab):
    data = {"name": "lab-rings", "count": 30, "scale": 0.5, "train_limit": None, "eval_limit": None}
    exp = _exp(tmp_path, data=data)
    assert exp.data.options == {"count": 30, "scale": 0.5}
    result = tl_research.run(exp)
    sizes = sum(result.metrics[f"data/{s}_size"] for s in ("train", "val", "test"))
    assert sizes == 60  # 2 classes x count 30
    recorded = yaml.safe_load((result.run_dir / "config.yaml").read_text())["data"]
    assert (recorded["count"], recorded["scale"]) == (30, 0.5)
    assert tl_research.load_run(result.run_dir).experiment.data.options == {"count": 30, "scale": 0.5}

    with pytest.raises(UserError, match=r"^data\.count: missing \(required by lab-rings\)"):
        _exp(tmp_path, data={"name": "lab-rings", "scale": 2.0})
    with pytest.raises(UserError, match=r"^data\.count: missing \(required by lab-rings\)"):
        tl_research.run(_exp(tmp_path, data={"name": "lab-rings"}))  # nothing set: the loader's call says so
    with pytest.raises(UserError, match=r"^data\.count: expected an integer, got 'many'"):
        _exp(tmp_path, data={**data, "count": "many"})
    with pytest.raises(UserError, match=r"^data\.scale: 0\.5 is an option of lab-rings data; animal-mnist does not"):
        _exp(tmp_path, data={"name": "animal-mnist", "scale": 0.5})
    rows = {r["name"]: r for r in list_datasets()}
    assert rows["lab-rings"]["options"] == {"count": None, "scale": 1.0} and "options" not in rows["animal-mnist"]


def test_a_plugins_own_options_are_listed_with_the_other_keys(lab):
    keys = [(d.key, d.default, d.meaning) for d in experiment_keys()]
    at = [k for k, _, _ in keys].index("backbone.drop_rate")
    assert keys[at - 1][0] == "backbone.layers" and keys[at] == ("backbone.drop_rate", 0.0, "[backbones: labx]")
    assert ("data.count", None, "[data: lab-rings]") in keys and ("data.scale", 1.0, "[data: lab-rings]") in keys
    schema = experiment_schema()["properties"]
    assert schema["backbone"]["properties"]["tap"] == {"enum": ["pre", "post"], "description": "backbones: labx"}
    assert schema["data"]["properties"]["count"] == {"type": "integer", "description": "data: lab-rings"}
