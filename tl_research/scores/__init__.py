"""Transferability scores (each a registered function over frozen features), `tlr rank`, and how well a score agrees
with fine-tuning.

May import: backbones, data, cache, training.probe, the root modules.
"""
