"""Dataset parsers, one file each; importing this package registers every parser with :func:`build_dataset`.

A new dataset is one new file here (a function decorated with ``@register_dataset("name")``) plus one
config under ``conf/data/``: every module of this package is imported below, so nothing else changes.
"""

import importlib
import pkgutil

from ppreid.data.datasets.base import (  # noqa: F401
    DATASETS,
    ReIDRecord,
    ReIDSplits,
    build_dataset,
    merge_train_sets,
    register_dataset,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
