"""Dataset parsers: importing this package registers every parser with :func:`build_dataset`."""
from ppreid.data.datasets import cuhk03np, dukemtmc, genepers, market1501, market_style, msmt17  # noqa: F401
from ppreid.data.datasets.base import (DATASETS, ReIDRecord, ReIDSplits, build_dataset,  # noqa: F401
                                    merge_train_sets, register_dataset)
