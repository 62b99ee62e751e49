"""Datasets, splits and the data module."""
