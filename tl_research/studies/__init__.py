"""Studies on an Optuna storage: the study YAML, storages, grid and search studies with workers, pre-filtering by a
score.

May import: the base, backbones, data, strategies, scores, runtime, pipeline, config.
"""
