"""One vector per text from a Hugging Face encoder: which layers' token states (`layers`) and how they are pooled
(`pooling`). Imports torch only: `tlr export --format hf` ships this file beside hf_classifier.py, so a user's
`AutoModelForSequenceClassification` computes the features the run trained on with this same code."""

from __future__ import annotations

import torch
from torch import nn


def drop_unused_pooler(model: nn.Module, pooling: str) -> None:
    """Remove the encoder's pooler layer unless `pooling` reads it: unused weights would only inflate the trainable
    count (and an export would carry tensors nothing computes with)."""
    if pooling != "pooler" and getattr(model, "pooler", None) is not None:
        model.pooler = None


def pool(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Token states -> one vector per text (the model's pooler, CLS, or the mask-aware mean)."""
    if pooling == "pooler":
        return model.pooler(hidden)
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def text_features(model: nn.Module, batch: dict[str, torch.Tensor], pooling: str, layers: str) -> torch.Tensor:
    """(B, H) features of tokenizer output `batch` ((B, 4H) for concat_last_four; (B, layers + 1, H) for weighted,
    for the head's scalar mix)."""
    mask = batch["attention_mask"]
    if layers == "last":
        return pool(model, model(**batch).last_hidden_state, mask, pooling)
    states = model(**batch, output_hidden_states=True).hidden_states  # embeddings, layer 1, …, layer L
    if layers == "embeddings":
        return pool(model, states[0], mask, pooling)
    if layers == "second_to_last":
        return pool(model, states[-2], mask, pooling)
    if layers == "sum_last_four":
        return pool(model, torch.stack(states[-4:]).sum(0), mask, pooling)
    if layers == "concat_last_four":
        return torch.cat([pool(model, h, mask, pooling) for h in states[-4:]], -1)
    return torch.stack([pool(model, h, mask, pooling) for h in states], 1)
