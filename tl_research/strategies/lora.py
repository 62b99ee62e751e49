"""LoRA adapters through `peft` (injected into the backbone's own modules, so layer groups keep working)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_research.errors import UserError

if TYPE_CHECKING:  # torch loads with the first run (catalogue.py, read by every config, imports this module)
    from torch import nn

# attention query/value projections of BERT/RoBERTa/MiniLM and DistilBERT
HF_ATTENTION = ("query", "value", "q_lin", "v_lin")


def lora_candidates(model: nn.Module) -> list[str]:
    """Modules LoRA can adapt: Linear layers and 1x1, ungrouped convolutions."""
    from torch import nn

    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1)]


def resolve_targets(model: nn.Module, modality: str, targets: tuple[str, ...] | None) -> list[str]:
    """Full module names to adapt: `targets` as names or name suffixes, or the defaults for the modality."""
    candidates = lora_candidates(model)
    if targets is None:
        targets = HF_ATTENTION if modality == "text" else tuple(candidates)
    chosen = [n for n in candidates if any(n == t or n.endswith(f".{t}") for t in targets)]
    if not chosen:
        hint = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in candidates})[:12])
        raise UserError(f"freeze.lora.targets: {list(targets)} match no Linear or 1x1 conv module "
                        f"(names there end in: {hint})")
    return chosen


def add_lora(backbone: nn.Module, rank: int, alpha: float, dropout: float,
             targets: tuple[str, ...] | None = None) -> list[str]:
    """Inject LoRA adapters into `backbone.model` in place; returns the adapted module names."""
    # peft imports transformers: the strategy registry (read by `fit --help`) must not, so only LoRA runs pay
    from peft import LoraConfig, inject_adapter_in_model

    names = resolve_targets(backbone.model, backbone.modality, targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names)
    inject_adapter_in_model(config, backbone.model)
    return names


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base layer and put the plain layer back; returns how many were merged."""
    from peft.tuners.lora import LoraLayer  # on use, as above

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    return merged
