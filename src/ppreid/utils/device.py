"""Device names from config values (``auto`` | ``cpu`` | ``cuda`` | ``cuda:1`` ...), checked with a clear error."""

from __future__ import annotations

import torch

from ppreid.utils.errors import ConfigValueError


def resolve_device(device: str = "auto", key: str = "generator.device") -> torch.device:
    """``auto``: cuda when available, else cpu. ``key`` is the config key named in errors."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigValueError(
            f"{key}={device!r} is not a torch device ({err}); use auto, cpu, cuda, cuda:1 ..."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigValueError(f"{key}={device!r} but no CUDA GPU is visible to torch; use {key}=auto or cpu")
    return dev
