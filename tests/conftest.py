"""Shared fixtures: tiny random-weight twins (a timm test model, a 2-layer BERT) and tiny experiments."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")  # tracking tests turn it back on explicitly
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the feature cache of this test session (subprocesses inherit it); never the user's own cache
os.environ.setdefault("TLR_CACHE_DIR", tempfile.mkdtemp(prefix="tlr-test-cache-"))


# a small WordPiece vocabulary: special tokens, characters, their continuations and common words, so any English
# text tokenises (mostly into characters) without any installed model
_WORDS = ("the a an and or but not no is was are be it this that of to in on for with as by at from film movie "
          "story good bad great best worst love fun funny dull boring long short plot acting actor director "
          "script scene one two first its his her they there than more most very too so just even only")


def _vocab() -> list[str]:
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'\"-:;()")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *_WORDS.split()]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) with a small WordPiece tokenizer, saved as a local HF folder (defined here:
    no installed model needed)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = _vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
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
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data
