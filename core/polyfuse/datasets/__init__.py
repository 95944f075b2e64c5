"""Offline datasets: what optimizers that learn without stepping an environment read.

A pipeline names one by registry name (``dataset: {name: preferences,
params: {path: ...}}``); datasets are a registry kind of their own, so a
plugin can add formats through the ``register_datasets`` hook.
"""

from polyfuse.datasets.base import Dataset
from polyfuse.datasets.preferences import PreferenceBatch, PreferencePairs, read_preferences, write_preferences

__all__ = ["Dataset", "PreferenceBatch", "PreferencePairs", "read_preferences", "write_preferences"]
