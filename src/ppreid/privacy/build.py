"""``model.defence``: the defence of a privacy run built by name (its own module, so that ``defences.py``
and ``pool.py`` / ``ridge.py``, which build on ``defences.py``, never import each other)."""

from __future__ import annotations

from ppreid.privacy.defences import DependenceDefence, GANDefence, NoDefence
from ppreid.privacy.pool import DecoderPoolDefence
from ppreid.privacy.ridge import RidgeDefence
from ppreid.utils.errors import ConfigValueError

DEFENCES = {
    "gan": GANDefence,
    "pool": DecoderPoolDefence,
    "ridge": RidgeDefence,
    "dependence": DependenceDefence,
    "none": NoDefence,
}


def build_defence(kind: str, **options_of: dict):
    """The defence ``kind`` (``model.defence``) built from its own options: ``options_of[kind]``."""
    if kind not in DEFENCES:
        raise ConfigValueError(f"model.defence={kind!r} is unknown; use one of {', '.join(DEFENCES)}.")
    return DEFENCES[kind](**options_of.get(kind, {}))
