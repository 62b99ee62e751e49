"""Hugging Face datasets (bounded <6): a dataset's content fingerprint."""

from __future__ import annotations

from typing import Any


def fingerprint(table: Any) -> str:
    """The dataset's fingerprint (`Dataset._fingerprint`): a hash of its content and the transforms applied,
    which keys the feature cache; `datasets` has no public accessor for it."""
    return str(table._fingerprint)
