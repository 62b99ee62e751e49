"""hf (HF backbones): a folder transformers loads as the run's classifier —
`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` or
`pipeline("text-classification", model=folder, trust_remote_code=True)`. The config is the encoder's with the
pooling, layers, head and class names added; `hf_classifier.py` + `text_pooling.py` (this package's own files) are
the model code; the tokenizer's `model_max_length` is the run's max_length; a LoRA run's adapters are merged into
the encoder's weights (peft holds them apart)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from safetensors.torch import save_file

from tl_research.backbones import hf_classifier, text_pooling
from tl_research.errors import UserError
from tl_research.lifecycle.export import export_format, merged_model, metadata, plain
from tl_research.lifecycle.inference import LoadedRun

CLASSIFIER = "PooledEncoderForSequenceClassification"


def check(loaded: LoadedRun) -> None:
    name = loaded.experiment.backbone.name
    if name.partition("/")[0] != "hf":
        raise UserError(f"--format: hf exports HF encoders; {name} is not one (use timm or safetensors)")
    if loaded.model.backbone.layers == "weighted":
        raise UserError("--format: hf holds a linear or mlp head; backbone.layers=weighted mixes layers in the "
                        "head (use safetensors)")


@export_format("hf", "a transformers classifier folder (AutoModelForSequenceClassification, pipeline) and its "
                     "tokenizer", check)
def write(loaded: LoadedRun, out: Path) -> list[Path]:
    backbone = loaded.model.backbone
    config = copy.deepcopy(backbone.model.config)
    config.tl_pooling, config.tl_layers = backbone.pooling, backbone.layers
    config.tl_head = hf_classifier.describe_head(loaded.model.head)
    config.id2label = dict(enumerate(loaded.classes))
    config.label2id = {c: i for i, c in enumerate(loaded.classes)}
    config.architectures = [CLASSIFIER]
    config.auto_map = {"AutoModelForSequenceClassification": f"hf_classifier.{CLASSIFIER}"}
    config.save_pretrained(out)
    state = {f"encoder.{k}": v for k, v in merged_model(loaded).state_dict().items()}
    state.update({f"head.{k}": v for k, v in loaded.model.head.state_dict().items()})
    save_file(plain(state), out / "model.safetensors", metadata=metadata(loaded))
    for module in (hf_classifier, text_pooling):
        shutil.copyfile(module.__file__, out / Path(module.__file__).name)
    tokenizer = copy.deepcopy(backbone.preprocessing.tokenizer)
    tokenizer.model_max_length = backbone.preprocessing.max_length  # what truncation=True cuts at, as in the run
    tokenizer.save_pretrained(out)
    return [out / "config.json", out / "model.safetensors", out / "hf_classifier.py", out / "text_pooling.py",
            out / "tokenizer_config.json"]
