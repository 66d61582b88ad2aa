"""Library warnings are ignored inside the Lightning calls that raise them, never process-wide."""

import warnings

from ppreid.utils.console import library_warnings_ignored

LIGHTNING = "The dataloader, train_dataloader, does not have many workers which may be a bottleneck."


def _shown(message: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn(message, UserWarning, stacklevel=1)
    return [str(w.message) for w in caught]


def test_known_warnings_are_ignored_inside_the_block_only():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with library_warnings_ignored(r".*module\(s\) in eval mode.*"):
            warnings.warn(LIGHTNING, UserWarning, stacklevel=1)
            warnings.warn("Found 3 module(s) in eval mode at the start of training.", UserWarning, stacklevel=1)
            warnings.warn("my own warning", UserWarning, stacklevel=1)
        warnings.warn(LIGHTNING, UserWarning, stacklevel=1)  # after the block: shown again
    assert [str(w.message) for w in caught] == ["my own warning", LIGHTNING]
    assert warnings.filters == before
    assert _shown(LIGHTNING) == [LIGHTNING]
