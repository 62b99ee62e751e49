"""Datasets, splits, few-shot subsets, shifted test sets, the data section's options and the data modules.
Importing it registers every dataset.

May import: the base. Never backbones (both read inputs.py); config reads data/options.py.
"""

from tl_research.data import datasets, generic, hf_data, torchvision_data  # noqa: F401  (register the built-in and generic loaders)
from tl_research.data.registry import DATASETS, LoadOptions, RawDataset, list_datasets, load_dataset

__all__ = ["DATASETS", "LoadOptions", "RawDataset", "list_datasets", "load_dataset"]
