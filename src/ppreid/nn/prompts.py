"""Prompts with placeholder words whose token embeddings are replaced by given vectors.

A template such as `A S S style photo of a X X X X person.` is tokenized once with CLIP's
tokenizer (its vocabulary ships with open_clip: offline). Each placeholder word (`X`, `S`)
is one token; the number of its occurrences is the number of vectors it takes, so that
count is set by editing the template. At call time the template's rows of the token
embedding at those positions are replaced by the given vectors (learned per identity,
or produced by an inversion network) and the frozen text encoder runs on the result:

    composer = PromptComposer("A S S style photo of a X X X X person.", placeholders=("X", "S"))
    feats = composer(enc, X=x_vectors, S=s_vectors)   # (B, 4, D), (B, 2, D) -> (B, E)

A vector set of shape (n, D) or (1, n, D) is shared by every row of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from ppreid.nn.text import TextEncoder
from ppreid.utils.errors import ConfigValueError


class PromptComposer(nn.Module):
    """One template, its token ids (buffer `token_ids`, (1, context_length)) and placeholder positions.

    `placeholders`: the placeholder words this prompt needs; each must occur in the template.
    `counts[word]` is the number of vectors that word takes (its occurrences in the template).
    """

    def __init__(self, template: str, placeholders: Sequence[str] = ("X",), context_length: int = 77) -> None:
        super().__init__()
        tokenizer = SimpleTokenizer(context_length=context_length)
        self.template = template
        self.context_length = int(context_length)
        words = list(template.split())
        n_tokens = len(tokenizer.encode(template)) + 2  # + start and end of text
        if n_tokens > context_length:
            raise ConfigValueError(
                f"prompt template {template!r} is {n_tokens} tokens long with start/end of text; the text encoder "
                f"takes at most {context_length}. Shorten the template."
            )
        ids = tokenizer([template])[0]
        self.register_buffer("token_ids", ids.unsqueeze(0).long(), persistent=False)
        self.length = int(ids.argmax()) + 1  # up to and including end-of-text

        self.placeholders = tuple(placeholders)
        if len(set(self.placeholders)) != len(self.placeholders):
            raise ConfigValueError(f"prompt template {template!r}: placeholders={list(placeholders)} repeat a word.")
        self.counts: dict[str, int] = {}
        for word in self.placeholders:
            token = tokenizer.encode(word)
            if len(token) != 1:
                raise ConfigValueError(
                    f"prompt placeholder {word!r} is {len(token)} tokens for CLIP's tokenizer; use a one-token word "
                    "such as X or S."
                )
            positions = (ids == token[0]).nonzero().flatten()
            if len(positions) == 0:
                raise ConfigValueError(
                    f"prompt template {template!r} has no placeholder word {word!r} (it has words {words}); this "
                    f"prompt needs at least one, e.g. 'A photo of a {word} {word} person.'"
                )
            self.register_buffer(f"positions_{word}", positions, persistent=False)
            self.counts[word] = len(positions)

    def positions(self, word: str) -> torch.Tensor:
        """Token positions (indices into the sequence) of placeholder `word`."""
        return getattr(self, f"positions_{word}")

    def compose(self, enc: TextEncoder, **vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings (B, L, D), token ids (1, L)) of the template with the placeholders replaced.

        L is cut after end-of-text when the encoder is causal (later tokens cannot change the
        pooled feature), else the full context length.
        """
        given, needed = set(vectors), set(self.placeholders)
        if given != needed:
            raise ConfigValueError(
                f"prompt template {self.template!r} takes vectors for {sorted(needed)} "
                f"(counts {self.counts}), but vectors were given for {sorted(given)}."
            )
        batch = 1
        shaped = {}
        for word, vec in vectors.items():
            if vec.dim() == 2:
                vec = vec.unsqueeze(0)
            if vec.dim() != 3 or vec.shape[1] != self.counts[word] or vec.shape[2] != enc.width:
                raise ConfigValueError(
                    f"prompt template {self.template!r} has {self.counts[word]} {word!r} placeholder words, but the "
                    f"{word} vectors have shape {tuple(vectors[word].shape)}; expected (B, {self.counts[word]}, "
                    f"{enc.width}) or ({self.counts[word]}, {enc.width}). Edit the template (one {word!r} per vector) "
                    "or the number of vectors."
                )
            if vec.shape[0] != 1 and batch not in (1, vec.shape[0]):
                raise ValueError(f"PromptComposer: vector sets with batch sizes {batch} and {vec.shape[0]}.")
            batch = max(batch, vec.shape[0])
            shaped[word] = vec
        ids = self.token_ids[:, : self.length] if enc.is_causal else self.token_ids
        emb = enc.embed(ids).expand(batch, -1, -1).clone()
        for word, vec in shaped.items():
            emb[:, self.positions(word)] = vec.to(emb.dtype).expand(batch, -1, -1)
        return emb, ids

    def forward(self, enc: TextEncoder, **vectors: torch.Tensor) -> torch.Tensor:
        """Placeholder vectors by word -> (B, E) text features; B = the largest batch among the vector sets."""
        emb, ids = self.compose(enc, **vectors)
        return enc(emb, ids)

    def extra_repr(self) -> str:
        return f"template={self.template!r}, counts={self.counts}"


def encode_prompts(enc: TextEncoder, requests: Sequence[tuple]) -> list[torch.Tensor]:
    """Several prompt batches through the text encoder: ``[(composer, {word: vectors}), ...]`` -> one
    (B_i, E) tensor per request.

    Each request runs at its own length (cut after its end-of-text token when the encoder is causal):
    on a CPU one padded pass over all requests costs more than the separate short ones.
    """
    return [composer(enc, **vectors) for composer, vectors in requests]
