"""OmegaConf resolvers used by the configs; registered by the entry points (and the tests).

- ``${ppreid_groups:<config name>}``: the entry point's own config groups, for ``--help``;
- ``${ppreid_add:a,b,...}``: a sum, e.g. a two-stage model's ``trainer.max_epochs`` from its stages.
"""
from __future__ import annotations


def _add(*values):
    return sum(values)


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    from src.utils.config_groups import groups_help

    for name, fn in (("ppreid_groups", groups_help), ("ppreid_add", _add)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
