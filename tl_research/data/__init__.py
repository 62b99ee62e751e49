"""Datasets, splits, few-shot subsets and the data modules. Importing it registers every dataset."""

from tl_research.data import datasets, generic  # noqa: F401  (register the built-in and generic loaders)
from tl_research.data.registry import DATASETS, LoadOptions, RawDataset, list_datasets, load_dataset

__all__ = ["DATASETS", "LoadOptions", "RawDataset", "list_datasets", "load_dataset"]
