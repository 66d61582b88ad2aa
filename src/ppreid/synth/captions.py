"""Captions of GenePerson attribute records: image-text pairs for language-image pre-training.

Every GenePerson image comes from an attribute record (``src/ppreid/synth/attributes.py``), so captions are
free. Three kinds, mirroring PDM's content and style prompts:

- ``full``: the person and the scene/camera (``a young adult female, wearing a red striped t shirt, ...,
  in a parking lot, at night, grainy camera``);
- ``content``: the person only (appearance and viewpoint), no scene, light or camera word
  (:meth:`Captioner.person_caption`: the identity text of language-image pre-training);
- ``style``: the scene, light, weather and camera only (:meth:`Captioner.style_caption`: PDM's style
  prompts).

A caption names only what the image shows: a fragment naming an attribute that the record's view
hides (glasses on a back view, :func:`ppreid.synth.attributes.hidden_attributes`) or that the image
hides besides (``hidden``: e.g. the renderer's occluded shoes, a manifest line's ``hidden``) is left
out, its ``none`` phrasing too ("no glasses" cannot be seen from behind either).

Phrasings are config data (``conf/synth/captions.yaml``). Given a ``numpy`` generator, a caption draws
one phrasing per fragment, shuffles the fragment order and keeps each fragment with
``fragment_keep_prob`` (PLIP's varied, attribute-rich descriptions); without one it is canonical
(first phrasings, config order, every fragment), which is what evaluation queries use. A caption fits
the text tower's context (``context_length`` tokens of CLIP's tokenizer, start and end included):
fragments are cut from the end, never mid-word (only a subject longer than the context is cut, at a
word boundary).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppreid.synth.attributes import NONE, _to_plain, hidden_attributes, load_conf_yaml
from ppreid.synth.prompts import words
from ppreid.utils.errors import ConfigValueError

KINDS = ("full", "content", "style")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _keys(template: str) -> tuple[str, ...]:
    try:
        keys = tuple(f for _, f, _, _ in string.Formatter().parse(template) if f is not None)
    except ValueError as err:
        raise ConfigValueError(
            f"caption phrasing {template!r} is not a valid template ({err}); "
            "use {attribute_name} placeholders (conf/synth/captions.yaml)."
        ) from None
    if any(not k.isidentifier() for k in keys):
        raise ConfigValueError(f"caption phrasing {template!r}: placeholders must be attribute names.")
    return keys


def _fill(template: str, record: Mapping[str, str]) -> str:
    return _ARTICLE.sub(r"\1n ", template.format(**{k: words(record[k]) for k in _keys(template)}))


@dataclass(frozen=True)
class Fragment:
    """One attribute group of a caption: its phrasings, and those of an absent (``none``) value."""

    name: str
    phrasings: tuple[str, ...]
    none: tuple[str, ...] = ()

    @classmethod
    def parse(cls, name: str, spec: Any) -> Fragment:
        spec = _to_plain(spec)
        if isinstance(spec, Mapping):
            phr, none = spec.get("phrasings"), spec.get("none") or []
        else:
            phr, none = spec, []
        phr = [phr] if isinstance(phr, str) else list(phr or [])
        none = [none] if isinstance(none, str) else list(none)
        if not phr:
            raise ConfigValueError(f"caption fragment '{name}' has no phrasings (conf/synth/captions.yaml).")
        for t in phr + none:
            _keys(str(t))
        return cls(name, tuple(str(p) for p in phr), tuple(str(p) for p in none))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for p in self.phrasings for k in _keys(p)))

    def render(self, record: Mapping[str, str], rng: np.random.Generator | None) -> str | None:
        missing = [k for k in self.keys if k not in record]
        if missing:
            raise ConfigValueError(
                f"caption fragment '{self.name}' names attribute(s) {missing} that the record "
                f"lacks (record keys: {sorted(record)})."
            )
        absent = any(record[k] == NONE for k in self.keys)
        options = self.none if absent else self.phrasings
        if not options:
            return None
        choice = options[0] if rng is None else options[int(rng.integers(len(options)))]
        return _fill(choice, record)


class Captioner:
    """``caption(record, kind, rng)`` -> text within ``context_length`` tokens; ``zero_shot_prompts``.

    Args:
        subject / style_subject: phrasings that open content/full and style captions.
        content / style: fragment name -> phrasings (or ``{phrasings, none}``).
        separator: joins the subject and the fragments.
        zero_shot: attribute -> prompt template with ``{value}`` (or ``{template, none}``).
        fragment_keep_prob: chance of keeping each fragment in a random caption.
        context_length: the text tower's context (77 for CLIP), start and end tokens included.
    """

    def __init__(
        self,
        subject: Sequence[str],
        style_subject: Sequence[str],
        content: Mapping[str, Any],
        style: Mapping[str, Any],
        separator: str = ", ",
        zero_shot: Mapping[str, Any] | None = None,
        fragment_keep_prob: float = 1.0,
        context_length: int = 77,
    ) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.subject = tuple(str(s) for s in (_to_plain(subject) or []))
        self.style_subject = tuple(str(s) for s in (_to_plain(style_subject) or []))
        if not self.subject or not self.style_subject:
            raise ConfigValueError(
                "captions: subject and style_subject need at least one phrasing each (conf/synth/captions.yaml)."
            )
        self.content = [Fragment.parse(k, v) for k, v in (_to_plain(content) or {}).items()]
        self.style = [Fragment.parse(k, v) for k, v in (_to_plain(style) or {}).items()]
        self.separator = str(separator)
        self.zero_shot = dict(_to_plain(zero_shot) or {})
        if not 0.0 < float(fragment_keep_prob) <= 1.0:
            raise ConfigValueError(f"captions.fragment_keep_prob={fragment_keep_prob} must be in (0, 1].")
        self.keep_prob = float(fragment_keep_prob)
        if int(context_length) < 8:
            raise ConfigValueError(f"captions: context_length={context_length} is too short for a caption (>= 8).")
        self.context_length = int(context_length)
        self._tokenizer = SimpleTokenizer(context_length=self.context_length)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None, context_length: int = 77) -> Captioner:
        """From a mapping shaped like ``conf/synth/captions.yaml`` (that file when None)."""
        cfg = _to_plain(cfg) if cfg is not None else load_conf_yaml("synth/captions.yaml")
        known = {"subject", "style_subject", "content", "style", "separator", "zero_shot", "fragment_keep_prob"}
        unknown = set(cfg) - known
        if unknown:
            raise ConfigValueError(f"captions config has unknown keys {sorted(unknown)}; known: {sorted(known)}.")
        return cls(
            cfg.get("subject"),
            cfg.get("style_subject"),
            cfg.get("content"),
            cfg.get("style"),
            cfg.get("separator", ", "),
            cfg.get("zero_shot"),
            cfg.get("fragment_keep_prob", 1.0),
            context_length,
        )

    # ------------------------------------------------------------------ length
    def num_tokens(self, text: str) -> int:
        """Tokens of ``text`` for CLIP's tokenizer, start and end of text included."""
        return len(self._tokenizer.encode(text)) + 2

    def fit(self, head: str, fragments: Sequence[str]) -> str:
        """``head`` + as many leading ``fragments`` as fit the context (cut at fragment boundaries)."""
        return self._fit(head, fragments)[0]

    def _fit(self, head: str, fragments: Sequence[str]) -> tuple[str, int]:
        """(the fitted text, how many of ``fragments`` it kept)."""
        if self.num_tokens(head) > self.context_length:
            head_words = head.split()
            while len(head_words) > 1 and self.num_tokens(" ".join(head_words)) > self.context_length:
                head_words.pop()
            head = " ".join(head_words)
        parts = [head]
        for frag in fragments:
            candidate = self.separator.join(parts + [frag])
            if self.num_tokens(candidate) > self.context_length:
                break
            parts.append(frag)
        return self.separator.join(parts), len(parts) - 1

    def fit_prompt(self, prompt: str, separator: str = ", ") -> str:
        """A stage-1 prompt (fragments joined by ``separator``) cut to the context at fragment boundaries."""
        parts = prompt.split(separator)
        return self.fit(parts[0], parts[1:]) if len(parts) > 1 else self.fit(prompt, [])

    # ------------------------------------------------------------------ captions
    def caption(
        self,
        record: Mapping[str, str],
        kind: str = "full",
        rng: np.random.Generator | None = None,
        exclude: Sequence[str] = (),
        hidden: Sequence[str] = (),
    ) -> str:
        """The ``kind`` caption of ``record`` (random phrasing / order / fragments with ``rng``, else canonical);
        ``exclude``: fragment names left out (e.g. ``viewpoint`` for a caption of the identity only);
        ``hidden``: attribute keys the image hides besides those its view hides (never named)."""
        return self.describe(record, kind, rng, exclude, hidden)[0]

    def person_caption(
        self,
        record: Mapping[str, str],
        rng: np.random.Generator | None = None,
        exclude: Sequence[str] = (),
        hidden: Sequence[str] = (),
    ) -> str:
        """The person only, as the image shows them (``content`` kind): no scene, light or camera word, nothing
        the view or ``hidden`` hides. The identity text of language-image pre-training."""
        return self.describe(record, "content", rng, exclude, hidden)[0]

    def style_caption(self, record: Mapping[str, str], rng: np.random.Generator | None = None) -> str:
        """The scene, light, weather and camera only (``style`` kind), no word about the person: PDM's style text."""
        return self.describe(record, "style", rng)[0]

    def describe(
        self,
        record: Mapping[str, str],
        kind: str = "full",
        rng: np.random.Generator | None = None,
        exclude: Sequence[str] = (),
        hidden: Sequence[str] = (),
    ) -> tuple[str, tuple[str, ...]]:
        """(caption, the attribute keys it states): what :meth:`caption` writes, and the attributes whose
        values it names (the subject's and every fragment that fits), so that the caption is true of any
        record with those values (``caption_truth`` positives in language-image pre-training). Fragments
        naming a key of :func:`hidden_attributes` (``record``, ``hidden``) are left out."""
        if kind not in KINDS:
            raise ConfigValueError(f"caption kind {kind!r}: choose one of {', '.join(KINDS)}.")
        groups = {"full": self.content + self.style, "content": self.content, "style": self.style}[kind]
        subjects = self.style_subject if kind == "style" else self.subject
        pick = (lambda opts: opts[0]) if rng is None else (lambda opts: opts[int(rng.integers(len(opts)))])
        subject = pick(subjects)
        head = _fill(subject, record)
        unseen = set(hidden_attributes(record, hidden))
        if unseen & set(_keys(subject)):
            raise ConfigValueError(
                f"caption subject {subject!r} names {sorted(unseen & set(_keys(subject)))}, which the image "
                "hides; subjects may name only what every view shows (conf/synth/captions.yaml)."
            )
        frags = [f for f in groups if f.name not in exclude and not unseen & set(f.keys)]
        if rng is not None:
            frags = [frags[i] for i in rng.permutation(len(frags))]
            keep = rng.random(len(frags)) < self.keep_prob
            if not keep.any():
                keep[int(rng.integers(len(frags)))] = True
            frags = [f for f, k in zip(frags, keep) if k]
        rendered = [(f, f.render(record, rng)) for f in frags]
        rendered = [(f, t) for f, t in rendered if t]
        text, kept = self._fit(head, [t for _, t in rendered])
        keys = _keys(subject) + tuple(k for f, _ in rendered[:kept] for k in f.keys)
        return text, tuple(dict.fromkeys(keys))

    def tokenize(self, texts: Sequence[str]):
        """(N, context_length) int64 token ids of CLIP's tokenizer (captions fit: nothing is cut)."""
        return self._tokenizer(list(texts))

    def captions(
        self, records: Sequence[Mapping[str, str]], kind: str = "full", rng: np.random.Generator | None = None
    ) -> list[str]:
        return [self.caption(r, kind, rng) for r in records]

    # ------------------------------------------------------------------ zero-shot
    def zero_shot_prompts(self, key: str, values: Sequence[str]) -> list[str]:
        """One prompt per value of attribute ``key`` (the order of ``values``)."""
        spec = self.zero_shot.get(key)
        if spec is None:
            raise ConfigValueError(
                f"captions.zero_shot has no prompt for attribute '{key}'; add one (conf/synth/captions.yaml)."
            )
        template, none = (spec.get("template"), spec.get("none")) if isinstance(spec, Mapping) else (spec, None)
        out = []
        for v in values:
            if v == NONE:
                if not none:
                    raise ConfigValueError(f"captions.zero_shot.{key} needs a `none` prompt: '{key}' can be none.")
                out.append(str(none))
            else:
                out.append(_ARTICLE.sub(r"\1n ", str(template).format(value=words(v))))
        return [self.fit(p, []) for p in out]

    @property
    def zero_shot_keys(self) -> list[str]:
        return list(self.zero_shot)


def draw_kinds(rng: np.random.Generator, weights: Mapping[str, float], n: int) -> list[str]:
    names = list(weights)
    p = np.asarray([float(weights[k]) for k in names], dtype=np.float64)
    return [names[i] for i in rng.choice(len(names), size=n, p=p / p.sum())]


def check_caption_kinds(weights: Mapping[str, float]) -> dict[str, float]:
    weights = {str(k): float(v) for k, v in dict(weights).items()}
    bad = [k for k in weights if k not in KINDS]
    if bad or not weights or any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigValueError(
            f"caption_kinds={weights}: a map of {', '.join(KINDS)} to weights >= 0 with a "
            "positive sum, e.g. {full: 0.6, content: 0.2, style: 0.2}."
        )
    return weights
