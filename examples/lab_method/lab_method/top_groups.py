"""Partial fine-tuning: the top `groups` layer groups and the head train, everything below stays frozen."""

from dataclasses import dataclass, field

from tl_research.errors import UserError
from tl_research.schema import bounds
from tl_research.strategies.freeze_plan import FreezePlan, prefix_plan, register


@register("top_groups")
@dataclass(frozen=True)
class TopGroups:
    """The top `groups` layer groups and the head train; the groups below stay frozen for the whole run."""

    # how many layer groups, counted from the top, train
    groups: int = field(default=2, metadata=bounds(ge=1))

    def resolve(self, num_groups: int, lr: float) -> "TopGroups":
        if self.groups > num_groups:
            raise UserError(f"freeze.groups: {self.groups} is more than the backbone's {num_groups} layer groups")
        return self

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return prefix_plan(num_groups, num_groups - self.groups)

    def frozen_prefix(self, num_groups: int) -> int:
        return num_groups - self.groups  # what the feature cache may compute once
