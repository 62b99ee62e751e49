"""A strategy's own rule for which parameters train: a predicate over parameter names, or a set of names, applied
within the groups its plan trains (a user's strategy class, used from Python without registering it)."""

from dataclasses import dataclass

from tl_research.backbones import build_backbone
from tl_research.strategies.freeze_plan import FreezePlan
from tl_research.training.heads import build_head
from tl_research.training.module import TransferModule


@dataclass(frozen=True)
class PointwiseOnly:
    """The pointwise convolutions of the top half of the groups train."""

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        top = tuple(i >= num_groups // 2 for i in range(num_groups))
        return FreezePlan(top, (1.0,) * num_groups, params=lambda name: ".conv_pw." in name)


@dataclass(frozen=True)
class Named:
    names: frozenset

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, (1.0,) * num_groups, params=self.names)


def _module(strategy):
    backbone = build_backbone("timm/test_efficientnet", "none")
    return TransferModule(backbone, build_head(backbone.num_features, 3), strategy, 3)


def test_a_predicate_over_parameter_names_chooses_what_trains():
    module = _module(PointwiseOnly())
    n = len(module.groups)
    training = {name for g in module.groups for name, p in g.params.items() if p.requires_grad}
    expected = {name for g in module.groups[n // 2:] for name in g.params if ".conv_pw." in name}
    assert training == expected and expected  # some pointwise convolutions in the top half, nothing else
    assert all(p.requires_grad for p in module.head.parameters())


def test_a_set_of_names_chooses_what_trains():
    names = frozenset({"conv_stem.weight", "blocks.1.0.bn1.bias"})
    module = _module(Named(names))
    assert {name for g in module.groups for name, p in g.params.items() if p.requires_grad} == names
