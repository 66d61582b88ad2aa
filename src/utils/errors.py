"""Errors for bad user input: caught by the entry points and printed without a traceback.

Every message names the offending file/value and says how to fix it.
"""


class ReIDInputError(Exception):
    """Base class of every user-facing input error (missing folder, bad file name, bad value)."""


class DatasetLayoutError(ReIDInputError):
    """A dataset folder is missing or does not have the expected layout."""


class BadImageError(ReIDInputError):
    """An image file is unreadable or corrupt."""


class ConfigValueError(ReIDInputError):
    """A configuration value is out of range or inconsistent."""


def find_input_error(exc: BaseException) -> "ReIDInputError | None":
    """The ReIDInputError behind ``exc`` (Hydra's instantiate and Lightning wrap errors), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ReIDInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
