"""The interface every image generator of stage 1 implements (config group ``generator``).

A generator turns a batch of :class:`ImageRequest` into PIL images, deterministically:
the same request (prompt, seed, size, attributes) always gives the same image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass
class ImageRequest:
    """Everything needed to make one image.

    attributes: identity + environment attribute record (the procedural renderer draws it).
    prompt / negative_prompt: the text built from the same record (the diffusion model reads it).
    seed: per-image seed; identity_seed: shared by all images of one identity.
    camera_seed: shared by all images of one camera (environment profile): the procedural
        renderer draws that camera's fixed scene layout and exact look from it.
    """

    pid: int
    camid: int
    attributes: dict[str, Any]
    prompt: str
    negative_prompt: str
    seed: int
    identity_seed: int
    height: int
    width: int
    camera_seed: int = 0


class ImageGenerator:
    """Base class. ``name`` and ``model_id`` are recorded in dataset.json and the manifest."""

    name: str = "base"
    model_id: str = ""

    def generate(self, requests: list[ImageRequest]) -> list[Image.Image]:
        raise NotImplementedError
