"""Freezing strategies: registered options dataclasses that plan which layer groups train (see plan.py)."""

from tl_research.strategies import catalogue  # noqa: F401  (registers the strategies)
from tl_research.strategies.plan import (
    STRATEGIES,
    FreezePlan,
    Strategy,
    frozen_prefix,
    prefix_plan,
    prepare_backbone,
    register,
)

__all__ = ["STRATEGIES", "FreezePlan", "Strategy", "frozen_prefix", "prefix_plan", "prepare_backbone", "register"]
