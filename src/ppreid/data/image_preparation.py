"""Decoding a run's images once: the in-memory uint8 store (``data.cache_images``) and the start-up check
that every image is readable (``data.verify_images``), with their ``auto`` policies. A mixin of
:class:`ppreid.data.datamodule.ReIDDataModule`, which says which images a stage reads (``_image_sets``)."""

from __future__ import annotations

import logging
from typing import Any

from ppreid.data.image_dataset import ImageReadError, ImageStore, decode_all, unreadable_images_message
from ppreid.data.transforms import ReIDTransform
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger("ppreid.data.datamodule")


def auto_switch(value: Any, key: str) -> bool | None:
    """``true`` / ``false`` / ``auto`` (None) of a data option."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "true", "false"):
        return {"auto": None, "true": True, "false": False}[value.lower()]
    raise ConfigValueError(f"data.{key}={value!r}: use true, false or auto.")


class ImagePreparation:
    """``prepare_images`` and its policies; the datamodule holds ``stores``, ``_verified``, ``_logged`` and
    the ``verify_images`` / ``verify_max_images`` / ``cache_images`` / ``cache_max_gib`` options."""

    def prepare_images(self, fit: bool = True, test: bool = True) -> None:
        """Decode the stage's images once: keep them in memory (``cache_images``) and/or check that every
        one is readable (``verify_images``), raising one message that lists every unreadable file."""
        sets = self._image_sets(fit, test)
        paths = list(dict.fromkeys(r.path for _, recs in sets for r in recs))
        if not paths or all(p in self._verified for p in paths):
            return  # nothing new (e.g. the test stage after training checked the targets)
        by_key: dict[tuple, list[str]] = {}
        for tf, recs in sets:
            by_key.setdefault(tf.decode_key, []).extend(r.path for r in recs)
        transforms = {tf.decode_key: tf for tf, _ in sets}
        verify = self._decide_verify(len(paths))
        cache = self._decide_cache(by_key)
        progress = self._dist()[1] == 0
        failures: dict[str, str] = {}
        for key, key_paths in by_key.items():
            if not cache:
                break
            store = self.stores.setdefault(key, ImageStore(key))
            todo = store.missing(key_paths)
            decoded, bad = decode_all(
                todo,
                transforms[key].decode,
                progress=progress and bool(todo),
                desc=f"decoding {len(todo)} images into memory",
            )
            store.add(
                [p for p, img in zip(todo, decoded) if img is not None], [img for img in decoded if img is not None]
            )
            failures.update(bad)
            self._verified.update(todo)
        if verify:
            todo = [p for p in paths if p not in self._verified]
            _, bad = decode_all(todo, None, progress=progress and bool(todo), desc=f"verifying {len(todo)} images")
            failures.update(bad)
            self._verified.update(todo)
        if failures and verify:
            order = {p: i for i, p in enumerate(paths)}
            listed = sorted(failures.items(), key=lambda kv: order.get(kv[0], len(order)))
            raise ImageReadError(unreadable_images_message(listed, len(paths)))

    def _log_once(self, msg: str, *args: Any) -> None:
        text = msg % args
        if text not in self._logged:
            self._logged.add(text)
            log.info(text)

    def _decide_verify(self, num_images: int) -> bool:
        if self.verify_images is not None:
            if not self.verify_images:
                self._log_once(
                    "data.verify_images=false: images are not checked at start; an unreadable file is "
                    "reported when it is read"
                )
            return self.verify_images
        on = num_images <= self.verify_max_images
        if on:
            self._log_once(
                "data.verify_images=auto: on (%s images, at most data.verify_max_images=%s): every image "
                "is decoded once now",
                f"{num_images:,}",
                f"{self.verify_max_images:,}",
            )
        else:
            self._log_once(
                "data.verify_images=auto: off (%s images, more than data.verify_max_images=%s): an "
                "unreadable file is reported when it is read (data.verify_images=true checks all at start)",
                f"{num_images:,}",
                f"{self.verify_max_images:,}",
            )
        return on

    def _decide_cache(self, by_key: dict[tuple, list[str]]) -> bool:
        nbytes = sum(len(set(p)) * 3 * key[0] * key[1] for key, p in by_key.items())
        size = f"{nbytes / 2**20:,.0f} MiB at {self.height}x{self.width}"
        if self.cache_images is not None:
            if self.cache_images:
                self._log_once("data.cache_images=true: images decoded once and kept in memory as uint8 (%s)", size)
            return self.cache_images
        on = nbytes <= self.cache_max_gib * 2**30
        if on:
            self._log_once(
                "data.cache_images=auto: on (%s, at most data.cache_max_gib=%g): images decoded once and "
                "kept in memory as uint8",
                size,
                self.cache_max_gib,
            )
        else:
            self._log_once(
                "data.cache_images=auto: off (%s, more than data.cache_max_gib=%g): images are decoded "
                "from their files every epoch",
                size,
                self.cache_max_gib,
            )
        return on

    def _store_for(self, transform: ReIDTransform) -> ImageStore | None:
        return self.stores.get(transform.decode_key)
