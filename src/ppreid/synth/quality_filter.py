"""Optional CLIP quality filter for stage 1: reject generated images that do not look like a person.

An image's score is the cosine similarity between its CLIP image embedding and the embedding of
``text`` ("a photo of a person"); images scoring below ``threshold`` are rejected and the writer
regenerates them with a new seed. Typical scores of a real ViT-B CLIP for a matching photo are
about 0.2-0.35, so a threshold of ~0.2 removes failed generations (calibrate on a sample).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from PIL import Image

from ppreid.synth.generators.base import ImageRequest
from ppreid.utils.device import resolve_device
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)


class ClipQualityFilter:
    """Score images against a text with an open_clip model and accept those at or above a threshold.

    Args:
        clip_model: open_clip model config name (e.g. ``ViT-B-16``; ``open_clip.list_models()``), or
            the path of a model config ``.json`` (registered under its file stem).
        pretrained: a local weights file, or an open_clip pretrained tag (e.g. ``openai``;
            tags download, so they are opt-in). None: random weights (only useful in tests).
        threshold: minimum cosine similarity in [-1, 1] to accept an image.
        text: the description an image must match.
        resize_mode: open_clip preprocessing: ``longest`` pads the whole (tall) person image into
            the square input; ``shortest`` would crop head and feet away.
    """

    def __init__(
        self,
        clip_model: str | None,
        pretrained: str | None = None,
        threshold: float = 0.2,
        text: str = "a photo of a person",
        device: str = "auto",
        resize_mode: str = "longest",
        batch_size: int = 64,
    ) -> None:
        import open_clip

        if not clip_model:
            raise ConfigValueError(
                "quality_filter.enabled=true needs quality_filter.clip_model: an open_clip model name "
                "(e.g. ViT-B-16), plus quality_filter.pretrained = a local weights file or an open_clip "
                "tag such as 'openai' (downloads on first use)"
            )
        if str(clip_model).endswith(".json"):
            path = os.path.expanduser(str(clip_model))
            if not os.path.isfile(path):
                raise ConfigValueError(
                    f"quality_filter.clip_model={clip_model!r}: no such model config file; give "
                    "an open_clip model name (e.g. ViT-B-16) or an existing .json config"
                )
            open_clip.add_model_config(path)
            clip_model = os.path.splitext(os.path.basename(path))[0]
        if clip_model not in open_clip.list_models():
            raise ConfigValueError(
                f"quality_filter.clip_model={clip_model!r} is not an open_clip model config; use one of "
                f"open_clip.list_models() (e.g. ViT-B-16, ViT-B-32, RN50) or register your own json with "
                f"open_clip.add_model_config"
            )
        if not -1.0 <= float(threshold) <= 1.0:
            raise ConfigValueError(
                f"quality_filter.threshold={threshold} must be a cosine similarity in [-1, 1] (a CLIPScore "
                f"of 100 x cosine, e.g. 25, is written 0.25); above 1 every image would be regenerated forever"
            )
        if pretrained and not os.path.isfile(os.path.expanduser(str(pretrained))):
            tags = open_clip.list_pretrained_tags_by_model(clip_model)
            if str(pretrained) not in tags:
                raise ConfigValueError(
                    f"quality_filter.pretrained={pretrained!r} is neither an existing weights file nor an "
                    f"open_clip tag of {clip_model} (tags: {', '.join(tags) or 'none'})"
                )
            pretrained = str(pretrained)
        elif pretrained:
            pretrained = os.path.expanduser(str(pretrained))
        else:
            log.warning(
                "quality filter: %s has random weights (quality_filter.pretrained is null); its scores are meaningless",
                clip_model,
            )
        self.device = resolve_device(device, key="quality_filter.device")
        self.threshold = float(threshold)
        self.text = text
        self.batch_size = int(batch_size)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            clip_model, pretrained=pretrained, device=self.device, image_resize_mode=resize_mode
        )
        self.model.eval()
        tokenizer = open_clip.get_tokenizer(clip_model)
        with torch.inference_mode():
            t = self.model.encode_text(tokenizer([text]).to(self.device)).float()
        self.text_embedding = torch.nn.functional.normalize(t, dim=-1)[0]  # (D,)

    @torch.inference_mode()
    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        """Cosine similarity of each image's embedding with the text embedding, in [-1, 1]."""
        out: list[float] = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([self.preprocess(img.convert("RGB")) for img in images[i : i + self.batch_size]])
            f = self.model.encode_image(x.to(self.device)).float()  # (B, D)
            out += (torch.nn.functional.normalize(f, dim=-1) @ self.text_embedding).tolist()
        return out

    def accept(self, images: Sequence[Image.Image], requests: Sequence[ImageRequest]) -> list[bool]:
        """True for each image whose score >= threshold (``requests`` are for filters that read prompts)."""
        return [s >= self.threshold for s in self.scores(images)]
