"""Transferability scores, one module per score registered with `registry.register_score` (found by the registry,
so `tlr rank`, `study.prefilter`, the CLI and tables pick a new one up), `tlr rank` over backbones x depths
(rank.py), and how well a score agrees with fine-tuning (agreement.py).

May import: the base, backbones, data, cache, training, pipeline, config.
"""
