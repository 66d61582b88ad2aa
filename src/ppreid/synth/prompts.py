"""Prompt builder of stage 1: an attribute record -> (positive, negative) prompt.

Templates are config data (``conf/synth/prompts.yaml``). The positive prompt is a list of
fragments, each formatted with the record (``{key}`` -> value, underscores shown as spaces) and
joined; a fragment that names an attribute whose value is ``none`` is dropped, so every other
value appears in the text. Images of one identity share the identity fragments word for word,
which is what keeps a diffusion model's identity consistent.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from ppreid.synth.attributes import NONE, _to_plain, load_conf_yaml
from ppreid.utils.errors import ConfigValueError

_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def words(value: str) -> str:
    """How an attribute value reads in a prompt: ``t_shirt`` -> ``t shirt``."""
    return str(value).replace("_", " ")


class PromptBuilder:
    """``build(record) -> (positive, negative)`` from fragment templates.

    Args:
        positive: fragment templates, e.g. ``"wearing a {upper_colour} {upper_type}"``.
        negative: the fixed negative prompt.
        separator: joins positive fragments (and negative words).
        negative_if_none: ``{attribute: words}`` added to the negative prompt when the value is ``none``.
    """

    def __init__(
        self,
        positive: Sequence[str],
        negative: str = "",
        separator: str = ", ",
        negative_if_none: Mapping[str, str] | None = None,
    ) -> None:
        positive = _to_plain(positive)
        if isinstance(positive, str) or not positive:
            raise ConfigValueError(f"prompts.positive must be a non-empty list of fragment templates, got {positive!r}")
        self.fragments: list[tuple[str, tuple[str, ...]]] = []
        for frag in positive:
            try:
                keys = tuple(f for _, f, _, _ in string.Formatter().parse(str(frag)) if f is not None)
            except ValueError as err:
                raise ConfigValueError(
                    f"prompt fragment {frag!r} is not a valid template ({err}); use {{attribute_name}} placeholders."
                ) from None
            if any(not k.isidentifier() for k in keys):
                raise ConfigValueError(f"prompt fragment {frag!r}: placeholders must be plain attribute names.")
            self.fragments.append((str(frag), keys))
        self.negative = str(negative or "")
        self.separator = str(separator)
        self.negative_if_none = dict(_to_plain(negative_if_none) or {})

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None) -> PromptBuilder:
        """From a mapping shaped like ``conf/synth/prompts.yaml`` (that file when None)."""
        cfg = _to_plain(cfg) if cfg is not None else load_conf_yaml("synth/prompts.yaml")
        return cls(
            cfg.get("positive"), cfg.get("negative", ""), cfg.get("separator", ", "), cfg.get("negative_if_none")
        )

    def check_covers(self, keys: Sequence[str]) -> None:
        """Every attribute in ``keys`` must have a placeholder (so its value reaches the prompt)."""
        used = {k for _, ks in self.fragments for k in ks}
        missing = [k for k in keys if k not in used]
        if missing:
            raise ConfigValueError(
                f"prompt templates never mention attribute(s) {missing}; add a fragment "
                "with {name} for each (conf/synth/prompts.yaml)."
            )

    def build(self, record: Mapping[str, str]) -> tuple[str, str]:
        """Positive and negative prompt for one attribute record (identity + environment)."""
        parts = []
        for frag, keys in self.fragments:
            missing = [k for k in keys if k not in record]
            if missing:
                raise ConfigValueError(
                    f"prompt fragment {frag!r} names attribute(s) {missing} that the record "
                    f"lacks (record keys: {sorted(record)})."
                )
            if any(record[k] == NONE for k in keys):
                continue
            parts.append(frag.format(**{k: words(record[k]) for k in keys}))
        positive = _ARTICLE.sub(r"\1n ", self.separator.join(parts))
        extra = [w for k, w in self.negative_if_none.items() if record.get(k) == NONE]
        negative = self.separator.join([p for p in [self.negative, *extra] if p])
        return positive, negative
