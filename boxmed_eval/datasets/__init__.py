"""Dataset adapters: one module per dataset, each turning files on disk into ``Study`` records.

Add a dataset by adding a module here with a ``DatasetAdapter`` subclass decorated with
``@DATASETS.register("name")``; ``boxmed-eval datasets`` lists it.
"""

from boxmed_eval.datasets.base import DATASETS, DatasetAdapter, get_dataset, safe_join

__all__ = ["DATASETS", "DatasetAdapter", "get_dataset", "safe_join"]
