"""`hf/<model id or local folder>`: BERT-style encoders (BERT, RoBERTa, DistilBERT, MiniLM) with CLS/mean pooling
(the family's model code; hf_family.py registers it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tl_research.backbones.base import BackboneSplit, LayerGroup, SplitUnsupported, as_module, build_groups
from tl_research.backbones.from_run import run_backbone_state
from tl_research.backbones.offline import OFFLINE, locate
from tl_research.backbones.text_pooling import drop_unused_pooler, pool, text_features
from tl_research.errors import UserError
from tl_research.inputs import TextSpec
from tl_research.run_folder import is_run_folder

# encoder.layer.N (BERT/RoBERTa/MiniLM), transformer.layer.N (DistilBERT), layers.N / layer.N (others)
_LAYER = re.compile(r"^(?:encoder\.layer|transformer\.layer|encoder\.layers|layers|layer)\.(\d+)\.")


class HFBackbone(nn.Module):
    """A Hugging Face encoder; forward takes tokenizer output and returns one vector per text (`layers`: which
    layers' pooled states; `weighted` returns every layer's, (B, layers + 1, H), for a learned scalar mix in the
    head)."""

    modality = "text"

    def __init__(self, name: str, model: nn.Module, tokenizer: Any, weights_source: str,
                 pooling: str = "mean", max_length: int = 128, layers: str = "last") -> None:
        super().__init__()
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise UserError(f"backbone.pooling: {name} has no pooler layer (use mean or cls)")
        if pooling == "pooler" and layers != "last":
            raise UserError(f"backbone.layers: {layers} pools each layer itself; the pooler reads the last layer only "
                            f"(use pooling mean or cls)")
        drop_unused_pooler(model, pooling)
        self.name = name
        self.model = model
        self.pooling = pooling
        self.layers = layers
        self.weights_source = weights_source
        if layers in ("sum_last_four", "concat_last_four") and model.config.num_hidden_layers < 4:
            raise UserError(f"backbone.layers: {layers} needs 4 transformer layers; {name} has "
                            f"{model.config.num_hidden_layers}")
        hidden = int(model.config.hidden_size)
        self.num_features = 4 * hidden if layers == "concat_last_four" else hidden
        # the head's scalar mix needs to know how many states it mixes
        self.mixed_layers = int(model.config.num_hidden_layers) + 1 if layers == "weighted" else None
        self.preprocessing = TextSpec(tokenizer, max_length)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return text_features(self.model, batch, self.pooling, self.layers)

    def split(self, k: int) -> BackboneSplit:
        """Prefix: embeddings + the first k - 1 layers -> {hidden_states, attention_mask}; suffix: the other layers
        + pooling. k = n: the prefix is the whole forward (pooled vectors); k = 0: the prefix is the identity."""
        n = len(self.layer_groups())
        if not 0 <= k <= n:
            raise SplitUnsupported(f"k = {k} is outside 0..{n}")
        if k in (0, n):
            whole, identity = as_module(self.forward), nn.Identity()
            return BackboneSplit(k, identity, whole, "input") if k == 0 else BackboneSplit(k, whole, identity, "pooled")
        if self.layers != "last":
            raise SplitUnsupported(f"backbone.layers={self.layers} reads states from before group {k}")
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if getattr(self.model, "embeddings", None) is None or layers is None:
            raise SplitUnsupported(f"{self.name}: only BERT-style encoders (embeddings + encoder.layer) are split")

        def prefix(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            hidden = self.model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
            hidden = self._layers(layers[: k - 1], hidden, batch["attention_mask"])
            return {"hidden_states": hidden, "attention_mask": batch["attention_mask"]}

        def suffix(states: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = self._layers(layers[k - 1:], states["hidden_states"], states["attention_mask"])
            return pool(self.model, hidden, states["attention_mask"], self.pooling)

        return BackboneSplit(k, as_module(prefix), as_module(suffix), "tokens")

    def _layers(self, layers: nn.ModuleList, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not len(layers):
            return hidden
        mask = layer_mask(self.model, hidden, attention_mask)
        for layer in layers:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def layer_groups(self) -> list[LayerGroup]:
        """`embeddings`, then one group per transformer layer; anything after the layers joins the last.

        Recomputed on each call (cheap), so groups follow adapters that a strategy injected."""
        layers: dict[int, list[str]] = {}
        embeddings: list[str] = []
        tail: list[str] = []
        for pname, _ in self.model.named_parameters():
            m = _LAYER.match(pname)
            if m:
                layers.setdefault(int(m.group(1)), []).append(pname)
            elif not layers:
                embeddings.append(pname)
            else:
                tail.append(pname)  # pooler, final norms
        if not layers or not embeddings:
            raise UserError(f"backbone.name: {self.name} does not use a known encoder layer naming")
        order = sorted(layers)
        groups = [embeddings] + [layers[i] for i in order]
        groups[-1] += tail
        names = ["embeddings"] + [_LAYER.match(layers[i][0]).group(0).rstrip(".") for i in order]
        return build_groups(self.model, groups, names)


def layer_mask(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask in the form the model's layers take under the attention implementation the model was
    loaded with (eager: additive float, sdpa: boolean or None without padding, flex: a block mask), from
    transformers' public mask builder, the one BertModel.forward calls."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=attention_mask)


def _folder(ident: str, weights: str) -> tuple[Path | None, str]:
    """Local folder to load from (None: the hub) and the weights_source string."""
    if weights not in ("none", "hub", "offline"):
        path = Path(weights).expanduser()
        if not path.is_dir():
            raise UserError(f"backbone.weights: {weights!r} is not none, hub, offline or an existing model folder")
        return path, f"file:{path.resolve()}"
    local = Path(ident).expanduser()
    if local.is_dir():
        return local, f"file:{local.resolve()}"
    if weights == "hub":
        return None, f"hub:{ident}"
    if f"hf/{ident}" in OFFLINE:
        entry, path = locate(f"hf/{ident}")
        return path, f"offline:{entry.requirement}"
    if weights == "offline":
        locate(f"hf/{ident}")  # raises the error that lists what is offline
    raise UserError(f"backbone.weights: none needs the config of {ident!r} offline: pass a local model folder")


def _load_run_state(model: nn.Module, state: dict[str, torch.Tensor], ident: str) -> None:
    """A run's trained tensors into a freshly built model; only the pooler may be absent (runs that pool by mean
    or CLS drop it)."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise UserError(f"backbone.weights: the run's backbone does not fit hf/{ident} (e.g. tensor {bad})")


def build(ident: str, weights: str, pooling: str = "mean", max_length: int = 128, layers: str = "last") -> HFBackbone:
    """HFBackbone for a hub id or local folder; weights none | hub | offline | a local folder (hf_family.build_hf
    calls it)."""
    # imported by the first hf backbone: transformers takes ~2 s to import, which reading a config, listings and
    # runs of other families must not pay
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_state = None
    if is_run_folder(weights):
        # the architecture and tokenizer from the model itself, the tensors from the run
        run_state, run_source = run_backbone_state(weights, f"hf/{ident}")
        weights = "none"
    folder, source = _folder(ident, weights)
    where = str(folder) if folder is not None else ident
    local = folder is not None
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local)
        if weights == "none":
            config = AutoConfig.from_pretrained(where, local_files_only=local)
            model = AutoModel.from_config(config)
            source = "none"
        else:
            model = AutoModel.from_pretrained(where, local_files_only=local)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"backbone.name: cannot load hf/{ident} from {where}: {first}") from None
    if run_state is not None:
        _load_run_state(model, run_state, ident)
        source = run_source
    return HFBackbone(f"hf/{ident}", model, tokenizer, source, pooling, max_length, layers)
