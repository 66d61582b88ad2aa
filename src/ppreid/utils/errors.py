"""Errors the entry points print as one line, without a traceback.

Bad user input (``ReIDInputError`` and its kinds) names the offending file/value and says how to fix
it; a diverged training (``TrainingDivergedError``) is no input error, but its message also says what
happened, where, and what to try.
"""

from collections.abc import Iterable, Sequence


class ReIDInputError(Exception):
    """Base class of every user-facing input error (missing folder, bad file name, bad value)."""


class DatasetLayoutError(ReIDInputError):
    """A dataset folder is missing or does not have the expected layout."""


class BadImageError(ReIDInputError):
    """An image file is unreadable or corrupt."""


class ConfigValueError(ReIDInputError):
    """A configuration value is out of range or inconsistent."""


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite: training stopped before the step that would spread it.

    Not an input error (the same config may train at another seed or learning rate), but reported the
    same way: one line naming the loss, the step and what to lower.
    """


def _find(exc: BaseException, kinds: tuple) -> "BaseException | None":
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def find_input_error(exc: BaseException) -> "ReIDInputError | None":
    """The ReIDInputError behind ``exc`` (Hydra's instantiate and Lightning wrap errors), or None."""
    return _find(exc, (ReIDInputError,))


def find_reported_error(exc: BaseException) -> "ReIDInputError | TrainingDivergedError | None":
    """The error behind ``exc`` that an entry point prints as one line (bad input or a diverged training)."""
    return _find(exc, (ReIDInputError, TrainingDivergedError))


def check_known_keys(given: Iterable[str], known: Sequence[str], key: str) -> None:
    """Refuse misspelt config keys under ``key``: one line naming the unknown and the known ones."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigValueError(f"{key}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}.")
