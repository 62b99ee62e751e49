"""The feature cache: frozen-prefix outputs computed once, stored on disk (store.py), shared by runs and studies;
in a run, the decision, key and extraction (features.py) and the run's one feature plan (plan.py).

May import: the base, backbones, data, strategies, runtime, config. (runtime: the trainers' rank.)
"""
