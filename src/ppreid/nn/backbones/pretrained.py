"""Opt-in pretrained weights for backbones: one loader with one set of error messages.

`spec` is what the user wrote in the config: null (random init, said once in the log),
a local weights file, or a tag the backbone knows (e.g. "imagenet", "openai"), which
may download and is therefore never the default.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ppreid.utils.errors import ConfigValueError

log = logging.getLogger("ppreid.nn")

StateDict = dict[str, torch.Tensor]
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def read_state_dict(path: str | Path) -> StateDict:
    """Read a plain weights file (torch, weights_only, or safetensors) into a flat state dict.

    Unwraps `{"state_dict": ...}` / `{"model": ...}` containers and a DDP `module.` prefix.
    """
    path = Path(path)
    expected = (
        f"Expected a file written by torch.save(model.state_dict(), ...) or safetensors ({', '.join(WEIGHT_SUFFIXES)})."
    )
    if path.suffix != ".safetensors" and _is_torchscript(path):
        raise ConfigValueError(
            f"pretrained weights file {path} is a TorchScript archive (e.g. an original OpenAI CLIP .pt), "
            "which is not loaded as plain weights. Convert it once with "
            "`torch.save(torch.jit.load(FILE, map_location='cpu').state_dict(), 'weights.pt')`, "
            f"or use the open_clip tag instead. {expected}"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, zip, safetensors and I/O errors all mean "not a weights file"
        raise ConfigValueError(
            f"pretrained weights file {path} could not be read as a weights-only state dict "
            f"({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}). {expected}"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigValueError(
            f"pretrained weights file {path} does not hold a state dict (name -> tensor); "
            "save one with torch.save(model.state_dict(), PATH)."
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def fetch_tag(fetch: Callable[[], StateDict], kind: str, tag: str) -> StateDict:
    """Run a tag's download; a network failure becomes one message with the local-file way."""
    import urllib.error

    try:
        return fetch()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
        raise ConfigValueError(
            f"backbone {kind}: the weights of tag '{tag}' could not be downloaded ({type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0][:100]}); this machine is probably offline. Download them "
            f"elsewhere and pass the local file: backbone.pretrained=/path/to/weights.pth (or pretrained: null)."
        ) from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_pretrained(
    module: nn.Module,
    spec: str | None,
    *,
    kind: str,
    tags: Mapping[str, Callable[[], StateDict]] | None = None,
    convert: Callable[[StateDict], StateDict] | None = None,
) -> bool:
    """Load `spec` into `module` (strict) and return whether weights were loaded.

    `tags` maps a known tag to a function that fetches its state dict (opt-in download);
    `convert` adapts a raw state dict to the module (drop a classifier, strip a prefix,
    resize positional embeddings) and may raise ConfigValueError itself.
    """
    tags = dict(tags or {})
    if spec is None:
        log.info("backbone %s: no pretrained weights given (pretrained=null), starting from random init", kind)
        return False
    spec = str(spec)
    if spec in tags:
        source = f"tag '{spec}'"
        state = fetch_tag(tags[spec], kind, spec)
    elif Path(spec).expanduser().is_file():
        source = f"file {Path(spec).expanduser()}"
        state = read_state_dict(Path(spec).expanduser())
    else:
        accepted = ["null (random init)", "a path to an existing weights file (" + ", ".join(WEIGHT_SUFFIXES) + ")"]
        if tags:
            accepted.append("one of the tags " + ", ".join(repr(t) for t in sorted(tags)))
        raise ConfigValueError(
            f"backbone {kind}: pretrained={spec!r} is neither an existing file nor a known tag. "
            f"Accepted: {'; '.join(accepted)}. Fix the path or set pretrained: null."
        )
    if convert is not None:
        state = convert(state)
    _load_strict(module, state, kind=kind, source=source)
    log.info("backbone %s: loaded pretrained weights from %s", kind, source)
    return True


def _load_strict(module: nn.Module, state: StateDict, *, kind: str, source: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {name}: {', '.join(keys[:5])}{more}")
        raise ConfigValueError(
            f"backbone {kind}: {source} does not match the architecture ({'; '.join(parts)}). "
            f"Check that the file holds weights for this backbone (and its config, e.g. model_name), "
            f"or set pretrained: null."
        )
    module.load_state_dict(state, strict=True)
