"""What a ``model=privacy_gan`` checkpoint holds beside the weights (under the key ``privacy_gan``): the step
counters (E's, the adversary batches', the defence's clock), the phase and the phase boundaries, so a run
resumed inside any phase trains exactly as an uninterrupted one; and the key renames of older checkpoints."""

from __future__ import annotations

from typing import Any

CKPT_KEY = "privacy_gan"
LEGACY_PREFIXES = ("generator.", "discriminator.")  # checkpoints written before the defences were modules


def upgrade_legacy_keys(state_dict: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
    """A state dict with the generator / discriminator of an older checkpoint under ``defence.``; with the
    model's ``current`` state dict, the entries older checkpoints lack (the running mean image and its count,
    the defences' feature standardizers, which came later) are taken from it."""
    upgraded = {(f"defence.{k}" if k.startswith(LEGACY_PREFIXES) else k): v for k, v in state_dict.items()}
    for key, value in (current or {}).items():
        if key in ("mean_image", "images_seen") or ".standardizer." in key:
            upgraded.setdefault(key, value)
    return upgraded


def all_counters(counters: dict[str, int], clock: dict[str, int]) -> dict[str, int]:
    """The model's counters and the defence's clock (its ``batches`` is the model's ``r_batches``)."""
    clock = {k: v for k, v in clock.items() if k != "batches"}
    return {**counters, **clock}


def checkpoint_state(
    counters: dict[str, int], clock: dict[str, int], phase: str, boundaries: dict[str, int] | None
) -> dict[str, Any]:
    return {
        "counters": all_counters(counters, clock),
        "phase": phase,
        "boundaries": dict(boundaries) if boundaries else None,
    }


def restore_counters(state: dict[str, Any], counters: dict[str, int], clock: dict[str, int]) -> None:
    """Set ``counters`` and ``clock`` (in place) from a checkpoint's ``state``."""
    saved = {k: int(v) for k, v in state.get("counters", {}).items()}
    counters.update({k: saved[k] for k in counters if k in saved})
    clock.update({k: saved[k] for k in clock if k in saved})
    if "batches" in clock:
        clock["batches"] = counters["r_batches"]
