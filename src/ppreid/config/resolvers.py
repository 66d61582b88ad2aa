"""OmegaConf resolvers used by the configs; registered by the entry points (and the tests).

- ``${ppreid_groups:<config name>}``: the entry point's own config groups, for ``--help``;
- ``${ppreid_add:a,b,...}``: a sum, e.g. a two-stage model's ``trainer.max_epochs`` from its stages;
- ``${ppreid_vit_or_cnn:<open_clip model name>,A,B}``: A for a ViT image tower, B for a ResNet one
  (open_clip's ``RN*`` names), so a recipe follows its backbone (CLIP-ReID's ViT and CNN recipes differ);
- ``${ppreid_clip_weights:<open_clip model name>}``: ``openai`` where open_clip has OpenAI's weights for
  the model (ViT-B-16, RN50), else null (clip-tiny): the paper-scale CLIP recipes start from CLIP.

``trainer.precision=auto`` is not a resolver: train.py resolves it once, with :func:`_precision`, before
the Trainer is built (``bf16-mixed`` on a CPU with native bf16 arithmetic, AVX512-BF16 or AMX: about half
the CPU time of a tiny-CNN step, metrics equal to seed noise; else ``32-true``).
"""

from __future__ import annotations

import functools


def _add(*values):
    return sum(values)


def _vit_or_cnn(model_name, vit_value, cnn_value):
    from omegaconf import ListConfig, OmegaConf

    value = cnn_value if str(model_name).startswith("RN") else vit_value
    return OmegaConf.create(list(value)) if isinstance(value, (list, tuple, ListConfig)) else value


def _clip_weights(model_name):
    import open_clip

    return "openai" if "openai" in open_clip.list_pretrained_tags_by_model(str(model_name)) else None


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (x86 AVX512-BF16 / AMX-BF16 flags in /proc/cpuinfo).

    Elsewhere (older x86, most ARM builds, macOS) bf16 autocast is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _precision(choice="auto", accelerator="auto"):
    """``auto``: bf16-mixed on a native-bf16 CPU run, 32-true on a GPU or any other CPU."""
    if str(choice) != "auto":
        return choice
    if str(accelerator) in ("auto", "gpu", "cuda"):
        import torch

        if torch.cuda.is_available():
            return "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def register_resolvers() -> None:
    """Register the resolvers and the config schemas (conf/ lists them in its defaults)."""
    from omegaconf import OmegaConf

    from ppreid.config.config_groups import groups_help
    from ppreid.config.schemas import register_schemas

    register_schemas()

    for name, fn in (
        ("ppreid_groups", groups_help),
        ("ppreid_add", _add),
        ("ppreid_vit_or_cnn", _vit_or_cnn),
        ("ppreid_clip_weights", _clip_weights),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
