"""The attacker kinds of ``model.attackers`` and the check of a configured list."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ppreid.utils.errors import ConfigValueError

ATTACKERS = ("l1", "gan", "diffusion", "optim", "own")


def checked_attackers(attackers: Sequence[str], factories: Mapping[str, Callable | None]) -> list[str]:
    """``model.attackers`` as a list of known kinds, each with settings in ``factories``; else one clear error."""
    attackers = [str(a) for a in attackers]
    unknown = [a for a in attackers if a not in ATTACKERS]
    if unknown or not attackers:
        problem = f"unknown attacker {unknown[0]!r}" if unknown else "empty"
        raise ConfigValueError(
            f"model.attackers={attackers}: {problem}; choose from {', '.join(ATTACKERS)} "
            "(e.g. model.attackers=[l1,gan])."
        )
    missing = [a for a in attackers if factories[a] is None]
    if missing:
        raise ConfigValueError(
            f"model.attackers names {missing[0]} but model.{missing[0]} has no settings; "
            "use the model=attack config (conf/model/attack.yaml) or give them."
        )
    return attackers
