"""`timm/<name>`: any timm model as a feature extractor, grouped by the model's own `group_matcher` (the family's
model code; timm_family.py registers it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tl_research.adapters import timm as timm_adapter
from tl_research.backbones.base import (
    BackboneSplit,
    Chain,
    LayerGroup,
    SplitUnsupported,
    Step,
    build_groups,
    cut,
)
from tl_research.backbones.from_run import run_backbone_state
from tl_research.backbones.offline import load_converted, locate
from tl_research.errors import UserError
from tl_research.inputs import ImageSpec
from tl_research.run_folder import is_run_folder


def _timm() -> Any:
    """The timm package, imported by the first timm backbone: registering this family (which every config read
    does) must not cost timm's ~0.6 s import, nor may listings or runs of other families pay it."""
    import timm

    return timm


def _blocks(prefix: str, blocks: nn.Module) -> list[Step]:
    return [Step((f"{prefix}.{i}",), b) for i, b in enumerate(blocks)]


def forward_steps(model: nn.Module) -> list[Step] | None:
    """The forward of the supported timm families as an ordered chain of steps, block by block (None: not known).

    Mirrors each class's `forward_features` + `forward_head` (timm 1.0): EfficientNet/MobileNet, ResNet, ConvNeXt,
    VisionTransformer. The split equivalence test guards these against a timm change.
    """
    head = Step(("head", "fc_norm", "attn_pool", "classifier", "fc"), model.forward_head)
    families = _timm().models
    if isinstance(model, families.efficientnet.EfficientNet):
        blocks = [Step((f"blocks.{i}.{j}",), b) for i, stage in enumerate(model.blocks) for j, b in enumerate(stage)]
        return [Step(("conv_stem",), model.conv_stem), Step(("bn1",), model.bn1), *blocks,
                Step(("conv_head",), model.conv_head), Step(("bn2",), model.bn2), head]
    if isinstance(model, families.resnet.ResNet):
        stem = [Step((name,), getattr(model, name)) for name in ("conv1", "bn1", "act1", "maxpool")]
        return [*stem, *(s for i in range(1, 5) for s in _blocks(f"layer{i}", getattr(model, f"layer{i}"))), head]
    if isinstance(model, families.convnext.ConvNeXt):
        stages = [s for i, stage in enumerate(model.stages)
                  for s in [Step((f"stages.{i}.downsample",), stage.downsample),
                            *_blocks(f"stages.{i}.blocks", stage.blocks)]]
        return [Step(("stem",), model.stem), *stages, Step(("norm_pre",), model.norm_pre), head]
    if isinstance(model, families.vision_transformer.VisionTransformer):
        embed = Step(("patch_embed", "cls_token", "reg_token", "pos_embed"),
                     lambda x: timm_adapter.vit_tokens(model, x))
        return [embed, Step((), model.patch_drop), Step(("norm_pre",), model.norm_pre),
                *_blocks("blocks", model.blocks), Step(("norm",), model.norm), head]
    return None


class TimmBackbone(nn.Module):
    """A timm model without its classifier; forward returns pooled features (B, num_features)."""

    modality = "image"

    def __init__(self, name: str, model: nn.Module, weights_source: str, coarse: bool = False) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.weights_source = weights_source
        self.coarse = coarse
        self.num_features = int(model.num_features)
        cfg = _timm().data.resolve_data_config({}, model=model)
        self.preprocessing = ImageSpec(int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def layer_groups(self) -> list[LayerGroup]:
        """Recomputed on each call (cheap), so groups follow adapters that a strategy injected."""
        try:
            grouped = _timm().models.group_parameters(self.model, self.model.group_matcher(coarse=self.coarse))
            param_groups = [grouped[k] for k in sorted(grouped)]
        except (AttributeError, NotImplementedError):
            # no matcher: one group per top-level child, in registration order
            param_groups = [[f"{c}.{p}" for p, _ in m.named_parameters()] for c, m in self.model.named_children()]
            param_groups = [g for g in param_groups if g]
        return build_groups(self.model, param_groups)

    def split(self, k: int) -> BackboneSplit:
        steps = forward_steps(self.model)
        if steps is None:
            raise SplitUnsupported(f"{self.name}: {type(self.model).__name__} has no known block-by-block forward "
                                   f"(supported: EfficientNet/MobileNet, ResNet, ConvNeXt, ViT)")
        at = cut(steps, self.layer_groups(), k)
        kind = "pooled" if at == len(steps) else "input" if at == 0 else "tensor"
        return BackboneSplit(k, Chain(steps[:at]), Chain(steps[at:]), kind)


def _load_file(model: nn.Module, path: Path) -> None:
    """A local weight file through timm's own checkpoint reader (always `weights_only`): a plain state dict or a
    training checkpoint holding one under `state_dict` / `model` (its EMA weights when it has them), `module.`
    prefixes of DDP-saved files removed, .safetensors too; the checkpoint's classifier is dropped."""
    state = _timm().models.load_state_dict(str(path), use_ema=True, weights_only=True)
    head = model.default_cfg.get("classifier", "classifier")
    state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    load_converted(model, state)


def build(ident: str, weights: str, coarse: bool = False, layers: str = "last") -> TimmBackbone:
    """TimmBackbone for timm architecture `ident` with weights none | hub | offline | a local file (`layers` is
    hf's option, taken here only to refuse it with a reason; timm_family.build_timm calls it)."""
    arch, name = ident, f"timm/{ident}"
    if layers != "last":
        raise UserError(f"backbone.layers: {layers} selects hidden states of hf encoders; timm backbones give their "
                        f"pooled last stage (use last)")
    timm = _timm()
    if not timm.is_model(arch):
        raise UserError(f"backbone.name: unknown timm model {arch!r} "
                        f"(list them with: tlr backbones 'timm/*{arch[:4]}*')")
    if weights == "hub":
        try:
            model = timm.create_model(arch, pretrained=True, num_classes=0)
        except Exception as exc:  # network, auth or missing-file errors all mean: no hub weights here
            raise UserError(f"backbone.weights: hub weights for {name} could not be loaded "
                            f"({type(exc).__name__}); use weights: offline, a local file, or none") from None
        return TimmBackbone(name, model, f"hub:timm/{arch}", coarse)
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    if weights == "none":
        return TimmBackbone(name, model, "none", coarse)
    if weights == "offline":
        entry, path = locate(name)
        assert entry.convert is not None
        load_converted(model, entry.convert(torch.load(path, map_location="cpu", weights_only=True), model))
        return TimmBackbone(name, model, f"offline:{entry.requirement}", coarse)
    if is_run_folder(weights):
        state, source = run_backbone_state(weights, name)
        try:
            load_converted(model, state)
        except ValueError as exc:
            raise UserError(f"backbone.weights: the run's backbone does not fit {name}: {exc}") from None
        return TimmBackbone(name, model, source, coarse)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"backbone.weights: {weights!r} is not none, hub, offline, an existing weight file or a "
                        f"run folder")
    try:
        _load_file(model, path)
    except Exception as exc:  # unpickling, safetensors and shape errors: all mean the file does not fit
        raise UserError(f"backbone.weights: {path} does not fit {name}: {exc}") from None
    return TimmBackbone(name, model, f"file:{path.resolve()}", coarse)
