"""The feature cache: frozen-prefix outputs computed once, stored on disk (store.py), shared by runs and studies;
in a run, the decision, key and extraction (features.py) and the run's one feature plan (plan.py).

May import: backbones, data, strategies, runs (the trainers' rank), config and the root modules.
"""
