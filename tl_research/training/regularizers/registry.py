"""The regularizer registry, what a term sees at a training step, and the `regularize:` section of an experiment.

A term is a frozen dataclass of its options under `@register_regularizer(name)` with `penalty(step) -> Tensor`.
Optional hooks: `groups(num_groups)` the layer groups whose outputs it reads (of the trained model and of theta_0:
the run then trains on raw inputs, not on cached prefix outputs); `uses_theta0` (class attribute) it reads the
pretrained weights; `prepare(source, batches, num_classes)` computes, once before the first step, state that
`penalty` reads as `step.state` (saved in checkpoints: a resumed run uses the same), on the first
`prepare_batches` training batches (1 when absent).
The registering module is imported by every config read: torch loads inside the hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from tl_research.errors import UserError
from tl_research.registry import Registry, import_package
from tl_research.schema import from_dict, public_dict

REGULARIZERS: Registry[type] = Registry("regularizer")
_MACHINERY = frozenset({"registry", "outputs"})
R = TypeVar("R")


def register_regularizer(name: str) -> Callable[[type[R]], type[R]]:
    """Class decorator: a regularizer's options dataclass under `regularize.NAME`."""

    def add(cls: type[R]) -> type[R]:
        cls.name = name  # type: ignore[attr-defined]
        return REGULARIZERS.register(name)(cls)

    return add


def regularizers() -> list[tuple[str, type]]:
    """Every regularizer (this package's modules imported once, on the first call)."""
    import_package("tl_research.training.regularizers", _MACHINERY)
    return REGULARIZERS.items()


@dataclass
class Step:
    """What a term sees at one training step."""

    module: Any  # the TransferModule being trained (backbone, head, groups, theta0, global_step)
    inputs: Any  # the batch's inputs (raw, or cached prefix outputs)
    labels: Any  # (B,)
    logits: Any  # (B, classes)
    features: Any  # (B, D): the head's input
    maps: dict[int, Any]  # the trained model's output of each group the term reads
    source_maps: dict[int, Any]  # theta_0's output of the same groups (no gradient)
    state: dict[str, Any]  # what the term's `prepare` returned


class Regularizer(Protocol):
    name: ClassVar[str]

    def penalty(self, step: Step) -> Any: ...


def groups_read(term: Any, num_groups: int) -> tuple[int, ...]:
    """The layer groups (non-negative indices) whose outputs `term` reads."""
    hook = getattr(term, "groups", None)
    return tuple(sorted({g % num_groups for g in hook(num_groups)})) if hook is not None else ()


@dataclass
class RegularizeConfig:
    """`regularize:`: named terms, each with its own options (`regularize.bss.eta`); none by default."""

    terms: dict[str, Any] = field(default_factory=dict, metadata={"derived": True})

    @classmethod
    def from_mapping(cls, data: Any, prefix: str = "regularize.") -> RegularizeConfig:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise UserError(f"{prefix.rstrip('.')}: a mapping of regularizer names to their options "
                            f"(known: {', '.join(n for n, _ in regularizers())})")
        regularizers()
        terms = {}
        for name, options in data.items():
            if options is None or options is False:  # `--set regularize.bss=null`: that term off
                continue
            entry = REGULARIZERS.get(str(name), f"{prefix}{name}")
            terms[str(name)] = from_dict(entry, {} if options is True else options, f"{prefix}{name}.")
        return cls(terms)

    def to_dict(self) -> dict[str, Any]:
        return {name: public_dict(term) for name, term in self.terms.items()}

    def __bool__(self) -> bool:
        return bool(self.terms)
