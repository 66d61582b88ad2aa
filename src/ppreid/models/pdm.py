"""PDM: the Prompt-driven Disentanglement Mechanism of DPPP (stage 2 of the paradigm), *our reading*.

The DPPP paper's full text is not public; this is our reading of its abstract, built on CLIP-ReID and
on textual-inversion networks (SEARLE, Pic2Word). Every choice below is a config value.

Two textual inversion networks map an image embedding f (B, E) to pseudo-words: ``inversion_content``
(phi_c) to the n_c words of its *content* (identity), ``inversion_style`` (phi_s) to the n_s words of
its *style* (domain). Templates (config): content ``A photo of a X X X X person.``, style
``A photo in S S style.``, composed ``A S S style photo of a X X X X person.``. The style label of an
image is its camera id (a GenePerson camera is an environment profile) or its source dataset.

Stage 1 (image encoder frozen, features cached; phi_c and phi_s trained; P x K batches in both recipes, so
each batch holds several images of each identity), each term switchable:
- ``identity``: supervised contrastive loss, identity labels, image <-> content prompt (both ways);
- ``style``: supervised contrastive loss, style labels, image <-> style prompt (both ways);
- ``composed``: InfoNCE between each image and its own composed prompt;
- ``content_invariance``: the content words of a photometrically re-styled view equal the original's
  (1 - cosine per word; both views pass phi_c with the same dropout masks, so identical inputs give 0;
  the re-styled views are rendered and cached only when this term is on). It acts on phi_c only: the
  image encoder is frozen and its features cached, so stage 1 reaches the encoder through the text
  targets it builds, never directly;
- ``decorrelation``: the content and style prompt features (B, E) of the batch are decorrelated: the
  mean squared cross-correlation between their dimensions, each centred on its batch mean and scaled to
  unit variance (:func:`ppreid.losses.decorrelation.cross_correlation_penalty`), so a constant offset of
  either set cannot meet it.

Stage 2 (phi_c, phi_s and the text encoder frozen; image encoder trained):
- the ``loss`` group: label-smoothed ID + batch-hard triplet on a BNNeck;
- ``i2t``: image -> text cross-entropy against per-identity content-prompt features (``text_bank``,
  computed at the start of stage 2: the mean of each identity's content-prompt features; with
  ``stage2_loss.normalize`` the mean of the L2-normalised features, L2-normalised again, so the bank
  lives where the loss compares);
- ``style_mixed``: image i's content words composed with the style words of an image of *another
  style* in the batch must still match i's identity (supervised contrastive, image -> text). The
  inversion networks were trained on the frozen stage-1 features; ``input: cached`` feeds them those
  (kept in the checkpoint as ``stage1_feats``), ``input: current`` the image encoder's current stage-2
  features (detached), which drift away from what phi_c / phi_s were trained on;
- ``content_invariance``: the content words that the frozen phi_c reads from the image encoder's current
  features must agree across styles: for every pair of images of the same identity and different styles
  in the (P x K) batch, 1 - the mean over words of the cosine of their words. phi_c's weights are taken
  out of the graph, so the gradient goes to the image encoder only: this is the content invariance that
  acts on the encoder (the stage-1 term of the same name trains phi_c).

``grad_norm_interval`` (N > 0): every N stage-2 steps, the norm of the gradient each weighted stage-2 term
sends to the image encoder's parameters (``torch.autograd.grad``, the graph kept for the step) is logged as
``train/grad_norm_image/<term>`` and summarised (last, mean, count) under ``grad_norm_image`` in
results.json, so an ablation whose term sends (almost) nothing to the encoder can be read as such.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ppreid.losses.contrastive import SupConLoss, i2t_cross_entropy, info_nce
from ppreid.losses.decorrelation import cross_correlation_penalty
from ppreid.models.two_stage_clip import TwoStageCLIPModule
from ppreid.nn.inversion import TextualInversion
from ppreid.nn.prompt_prefix import encode_with_prefix
from ppreid.nn.prompts import PromptComposer
from ppreid.utils.errors import ConfigValueError, check_known_keys

STYLE_LABELS = ("camid", "domain")
STAGE1_TERMS = ("identity", "style", "composed", "content_invariance", "decorrelation")
STAGE2_TERMS = ("i2t", "style_mixed", "content_invariance")
TERM_OPTIONS = {"style_mixed": {"input": "cached"}}
STYLE_MIXED_INPUTS = ("cached", "current")


def _terms(cfg: dict[str, Any] | None, names, key: str) -> dict[str, dict[str, Any]]:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(names))
    if unknown:
        raise ConfigValueError(f"{key}: unknown term(s) {', '.join(unknown)}; the terms are {', '.join(names)}.")
    out = {}
    for name in names:
        defaults = {"enabled": True, "weight": 1.0, **TERM_OPTIONS.get(name, {})}
        given = dict(cfg.get(name) or {})
        check_known_keys(given, tuple(defaults), f"{key}.{name}")
        term = {**defaults, **given}
        if float(term["weight"]) < 0:
            raise ConfigValueError(f"{key}.{name}.weight={term['weight']}: loss weights must be >= 0.")
        out[name] = term
    return out


class PDMModel(TwoStageCLIPModule):
    lazy_state_prefixes = ("neck.classifier.", "neck_proj.classifier.", "text_bank", "stage1_feats")

    def __init__(
        self,
        backbone: nn.Module,
        losses: dict[str, dict[str, Any]],
        stage1: dict[str, Any],
        stage2: dict[str, Any],
        templates: dict[str, str] | None = None,
        inversion: dict[str, Any] | None = None,
        style_label: str = "camid",
        stage1_loss: dict[str, Any] | None = None,
        stage2_loss: dict[str, Any] | None = None,
        restyle_strength: float = 1.0,
        neck_feat: str = "before",
        test_feature: str = "concat",
        eval_metric: str = "cosine",
        max_rank: int = 50,
        num_classes: int | None = None,
        text_batch_size: int = 256,
        grad_norm_interval: int = 0,
        name: str = "pdm",
    ) -> None:
        super().__init__(
            backbone,
            losses,
            stage1,
            stage2,
            neck_feat=neck_feat,
            test_feature=test_feature,
            eval_metric=eval_metric,
            max_rank=max_rank,
            num_classes=num_classes,
            restyle_strength=restyle_strength,
            text_batch_size=text_batch_size,
            grad_norm_interval=grad_norm_interval,
            name=name,
        )
        if style_label not in STYLE_LABELS:
            raise ConfigValueError(
                f"model.style_label={style_label!r}; choose one of {', '.join(STYLE_LABELS)} "
                "(camid: a GenePerson camera is an environment profile; domain: the source dataset)."
            )
        self.style_label = style_label
        templates = {
            "content": "A photo of a X X X X person.",
            "style": "A photo in S S style.",
            "composed": "A S S style photo of a X X X X person.",
            **(templates or {}),
        }
        context = self.text_encoder.context_length
        self.content_prompt = PromptComposer(templates["content"], placeholders=("X",), context_length=context)
        self.style_prompt = PromptComposer(templates["style"], placeholders=("S",), context_length=context)
        self.composed_prompt = PromptComposer(templates["composed"], placeholders=("X", "S"), context_length=context)
        n_c, n_s = self.content_prompt.counts["X"], self.style_prompt.counts["S"]
        if self.composed_prompt.counts != {"X": n_c, "S": n_s}:
            raise ConfigValueError(
                f"model.templates: the composed template {templates['composed']!r} has {self.composed_prompt.counts} "
                f"placeholder words, but the content and style templates have X={n_c}, S={n_s}; they must agree."
            )
        inv = {"hidden_dim": 512, "num_layers": 2, "dropout": 0.5, "match_word_norm": True}
        check_known_keys(dict(inversion or {}), tuple(inv), "model.inversion")
        inv.update(inversion or {})
        word_norm = None
        if inv.pop("match_word_norm"):
            word_norm = float(self.text_encoder.token_embedding.weight.detach().norm(dim=1).mean())
        token_dim = self.text_encoder.width
        self.inversion_content = TextualInversion(self.embed_dim, token_dim, n_c, word_norm=word_norm, **inv)
        self.inversion_style = TextualInversion(self.embed_dim, token_dim, n_s, word_norm=word_norm, **inv)
        s1 = {"temperature": 1.0, "normalize": False, "infonce_temperature": 0.07, **(stage1_loss or {})}
        s2 = {"label_smoothing": 0.1, "temperature": 1.0, "normalize": False, **(stage2_loss or {})}
        self.s1 = _terms(s1.pop("terms", None), STAGE1_TERMS, "model.stage1_loss.terms")
        self.s2 = _terms(s2.pop("terms", None), STAGE2_TERMS, "model.stage2_loss.terms")
        if self.s2["style_mixed"]["input"] not in STYLE_MIXED_INPUTS:
            raise ConfigValueError(
                f"model.stage2_loss.terms.style_mixed.input={self.s2['style_mixed']['input']!r}; "
                f"choose {' or '.join(STYLE_MIXED_INPUTS)} (cached = the stage-1 features the "
                "inversion networks were trained on)."
            )
        for key, cfg, known in (
            ("stage1_loss", s1, ("temperature", "normalize", "infonce_temperature")),
            ("stage2_loss", s2, ("label_smoothing", "temperature", "normalize")),
        ):
            unknown = sorted(set(cfg) - set(known))
            if unknown:
                raise ConfigValueError(
                    f"model.{key}: unknown key(s) {', '.join(unknown)}; known: terms, {', '.join(known)}."
                )
        self.temperature, self.normalize = float(s1["temperature"]), bool(s1["normalize"])
        self.infonce_temperature = float(s1["infonce_temperature"])
        self.label_smoothing = float(s2["label_smoothing"])
        self.s2_temperature, self.s2_normalize = float(s2["temperature"]), bool(s2["normalize"])
        self.supcon = SupConLoss(temperature=self.temperature, normalize=self.normalize)
        self.s2_supcon = SupConLoss(temperature=self.s2_temperature, normalize=self.s2_normalize)
        if num_classes:  # else sized at fit by the training identities
            self.register_buffer("text_bank", torch.zeros(num_classes, self.embed_dim))
        self.register_buffer("stage1_feats", torch.zeros(0, self.embed_dim))  # filled at stage 2 when cached
        self._register_load_state_dict_pre_hook(self._size_stage1_feats)

    def _size_stage1_feats(self, state_dict, prefix, *args) -> None:
        """A checkpoint's ``stage1_feats`` (N, E) is sized by its training set: take its shape on loading."""
        given = state_dict.get(prefix + "stage1_feats")
        if given is not None and given.shape != self.stage1_feats.shape:
            self.stage1_feats = self.stage1_feats.new_zeros(given.shape)

    @property
    def cache_restyled(self) -> bool:
        term = self.s1["content_invariance"]
        return bool(term["enabled"]) and float(term["weight"]) > 0

    @property
    def style_mixed_on(self) -> bool:
        term = self.s2["style_mixed"]
        return bool(term["enabled"]) and float(term["weight"]) > 0

    # ----------------------------------------------------------------- set-up
    def setup_identities(self, dm) -> None:
        if self.style_label == "domain" and dm.num_domains < 2:
            raise ConfigValueError(
                f"model.style_label=domain, but the training data has {dm.num_domains} source dataset(s): the domain "
                f"label is the same for every image. Use style_label=camid (choices: {', '.join(STYLE_LABELS)}), or "
                "train on several sources."
            )
        if self.style_label == "camid" and dm.num_cameras < 2:
            raise ConfigValueError(
                f"model.style_label=camid, but the training data has {dm.num_cameras} camera: there is no style to "
                f"tell apart. Choices: {', '.join(STYLE_LABELS)} (domain needs several sources)."
            )
        bank = getattr(self, "text_bank", None)
        if bank is None or bank.shape[0] != dm.num_classes:
            self.register_buffer(
                "text_bank", torch.zeros(dm.num_classes, self.embed_dim, device=self.neck.bn.weight.device)
            )

    def stage1_modules(self) -> dict[str, nn.Module]:
        return {"inversion_content": self.inversion_content, "inversion_style": self.inversion_style}

    def styles(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch[self.style_label]

    # ----------------------------------------------------------------- prompts
    def content_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, E) image features -> (B, E) text features of their content prompts."""
        return encode_with_prefix(self.text_encoder, self.content_prompt, X=self.inversion_content(feats))

    # ----------------------------------------------------------------- stage 1
    def stage1_losses(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, styles = batch["pid"], self.styles(batch)
        on = {k: t["enabled"] and float(t["weight"]) > 0 for k, t in self.s1.items()}
        w = {k: float(t["weight"]) for k, t in self.s1.items()}
        terms: dict[str, torch.Tensor] = {}
        if on["content_invariance"]:
            # one phi_c pass over both views under shared dropout masks; its first half is the words of
            # the prompts below (a separate pass over ``feats`` would cost a second forward and backward)
            x_c, words_restyled = self.inversion_content.forward_paired(feats, self.cached("restyled", batch["index"]))
            terms["content_invariance"] = (
                w["content_invariance"] * (1.0 - F.cosine_similarity(words_restyled, x_c, dim=-1)).mean()
            )
        else:
            x_c = self.inversion_content(feats)
        x_s = self.inversion_style(feats)
        wanted = {
            "content": (self.content_prompt, {"X": x_c}),
            "style": (self.style_prompt, {"S": x_s}),
            "composed": (self.composed_prompt, {"X": x_c, "S": x_s}),
        }
        needed = [
            k
            for k, flag in (
                ("content", on["identity"] or on["decorrelation"]),
                ("style", on["style"] or on["decorrelation"]),
                ("composed", on["composed"]),
            )
            if flag
        ]
        # each prompt at its own length, its constant template prefix computed once (exact; a quarter of
        # the text-encoder time of this step, which the three prompts per image dominate)
        text = {k: encode_with_prefix(self.text_encoder, wanted[k][0], **wanted[k][1]) for k in needed}
        t_c, t_s = text.get("content"), text.get("style")
        if on["identity"]:
            terms["identity"] = w["identity"] * (self.supcon(feats, t_c, ids, ids) + self.supcon(t_c, feats, ids, ids))
        if on["style"]:
            terms["style"] = w["style"] * (
                self.supcon(feats, t_s, styles, styles) + self.supcon(t_s, feats, styles, styles)
            )
        if on["composed"]:
            terms["composed"] = w["composed"] * info_nce(feats, text["composed"], temperature=self.infonce_temperature)
        if on["decorrelation"]:
            terms["decorrelation"] = w["decorrelation"] * cross_correlation_penalty(t_c, t_s)
        return terms

    # ----------------------------------------------------------------- stage 2
    def build_stage2_targets(self) -> None:
        """text_bank[c] = the mean content-prompt feature of identity c's cached training images (of their
        L2-normalised features, normalised again, when the stage-2 loss compares normalised features);
        with ``style_mixed.input: cached`` the stage-1 features are kept as ``stage1_feats``."""
        cache = self.cache
        feats = cache["feats"]
        records = self.trainer.datamodule.train_records
        pids = torch.tensor([records[int(i)].pid for i in cache["index"]], device=feats.device)
        self.inversion_content.eval()
        content = torch.cat([self.content_features(chunk) for chunk in feats.split(self.text_batch_size)]).float()
        if self.s2_normalize:
            content = F.normalize(content, dim=1)
        bank = torch.zeros(self.text_bank.shape[0], content.shape[1], device=content.device)
        bank.index_add_(0, pids, content)
        counts = torch.bincount(pids, minlength=bank.shape[0]).clamp_min(1).unsqueeze(1)
        bank = bank / counts
        self.text_bank = F.normalize(bank, dim=1) if self.s2_normalize else bank
        if self.style_mixed_on and self.s2["style_mixed"]["input"] == "cached":
            stage1 = feats.new_zeros(len(records), feats.shape[1])
            stage1[cache["index"]] = feats
            self.stage1_feats = stage1

    def stage2_text_losses(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, styles = batch["pid"], self.styles(batch)
        terms: dict[str, torch.Tensor] = {}
        i2t, mixed, invariance = self.s2["i2t"], self.s2["style_mixed"], self.s2["content_invariance"]
        if i2t["enabled"] and float(i2t["weight"]) > 0:
            terms["i2t_ce"] = float(i2t["weight"]) * i2t_cross_entropy(
                feats,
                self.text_bank,
                ids,
                label_smoothing=self.label_smoothing,
                temperature=self.s2_temperature,
                normalize=self.s2_normalize,
            )
        if mixed["enabled"] and float(mixed["weight"]) > 0:
            with torch.no_grad():
                partner = self.other_style_partner(styles)
                keep = partner >= 0
                if bool(keep.any()):
                    source = self.stage1_feats[batch["index"]] if mixed["input"] == "cached" else feats.detach()
                    x_c = self.inversion_content(source[keep])
                    x_s = self.inversion_style(source[partner[keep]])
                    t_mix = encode_with_prefix(self.text_encoder, self.composed_prompt, X=x_c, S=x_s).float()
            if bool(keep.any()):
                terms["style_mixed"] = float(mixed["weight"]) * self.s2_supcon(feats, t_mix, ids, ids[keep])
        if invariance["enabled"] and float(invariance["weight"]) > 0:
            value = self.cross_style_word_disagreement(feats, ids, styles)
            if value is not None:
                terms["content_invariance"] = float(invariance["weight"]) * value
        return terms

    def frozen_content_words(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, E) image features -> (B, n_c, D) content words of phi_c with its weights out of the graph:
        the gradient reaches ``feats`` (the image encoder) and never phi_c's parameters."""
        from torch.func import functional_call

        module = self.inversion_content
        frozen = {name: t.detach() for name, t in (*module.named_parameters(), *module.named_buffers())}
        return functional_call(module, frozen, (feats,))

    def cross_style_word_disagreement(
        self, feats: torch.Tensor, ids: torch.Tensor, styles: torch.Tensor
    ) -> torch.Tensor | None:
        """Mean over the batch's pairs (i, j) of the same identity and different styles of 1 - the mean over
        the n_c words of cos(w_i, w_j), the words read by the frozen phi_c from the current features (B, E);
        None when the batch has no such pair."""
        pairs = (ids.view(-1, 1) == ids.view(1, -1)) & (styles.view(-1, 1) != styles.view(1, -1))
        if not bool(pairs.any()):
            return None
        words = F.normalize(self.frozen_content_words(feats).float(), dim=-1)  # (B, n_c, D)
        agreement = torch.einsum("ind,jnd->ij", words, words) / words.shape[1]  # (B, B) mean word cosine
        return (1.0 - agreement[pairs]).mean()

    def other_style_partner(self, styles: torch.Tensor) -> torch.Tensor:
        """For each row, a row of another style (a seeded-by-step random choice); -1 if the batch has one style."""
        b = styles.shape[0]
        other = styles.view(-1, 1) != styles.view(1, -1)  # (B, B)
        gen = torch.Generator(device="cpu").manual_seed(int(self.global_step))
        scores = torch.rand(b, b, generator=gen).to(styles.device).masked_fill(~other, -1.0)
        partner = scores.argmax(dim=1)
        return torch.where(other.any(dim=1), partner, torch.full_like(partner, -1))
