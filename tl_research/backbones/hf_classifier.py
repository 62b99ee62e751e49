"""A trained hf run as a transformers sequence classifier: the encoder, the run's pooling and layers, its head.

`tlr export --format hf` copies this file and text_pooling.py into the export and names the class in the config's
`auto_map`, so `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` (and a
`pipeline("text-classification", ...)`) load the run's classifier. Imports torch and transformers only: outside the
package it runs as transformers' remote code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .text_pooling import drop_unused_pooler, text_features

# the head's layers as the config records them: [name, args] per layer, in order
_HEAD_LAYERS = {"linear": nn.Linear, "relu": nn.ReLU, "dropout": nn.Dropout}


def describe_head(head: nn.Sequential) -> list[list]:
    """`head` as `[name, args]` layers (what `build_head` made: Dropout, Linear, ReLU); raises ValueError on a
    layer this file cannot rebuild."""
    out: list[list] = []
    for layer in head:
        if isinstance(layer, nn.Linear):
            out.append(["linear", [layer.in_features, layer.out_features]])
        elif isinstance(layer, nn.Dropout):
            out.append(["dropout", [layer.p]])
        elif isinstance(layer, nn.ReLU):
            out.append(["relu", []])
        else:
            raise ValueError(type(layer).__name__)
    return out


class PooledEncoderForSequenceClassification(PreTrainedModel):
    """Logits = head(features(encoder(batch))); the config carries `tl_pooling`, `tl_layers` and `tl_head`."""

    base_model_prefix = "encoder"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config)
        drop_unused_pooler(self.encoder, config.tl_pooling)
        self.head = nn.Sequential(*(_HEAD_LAYERS[name](*args) for name, args in config.tl_head))
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs) -> SequenceClassifierOutput:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if attention_mask is None:
            batch["attention_mask"] = torch.ones_like(input_ids)
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        logits = self.head(text_features(self.encoder, batch, self.config.tl_pooling, self.config.tl_layers))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
