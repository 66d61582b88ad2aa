"""OmegaConf resolvers used by the configs; registered by the entry points (and the tests).

- ``${ppreid_groups:<config name>}``: the entry point's own config groups, for ``--help``;
- ``${ppreid_add:a,b,...}``: a sum, e.g. a two-stage model's ``trainer.max_epochs`` from its stages;
- ``${ppreid_vit_or_cnn:<open_clip model name>,A,B}``: A for a ViT image tower, B for a ResNet one
  (open_clip's ``RN*`` names), so a recipe follows its backbone (CLIP-ReID's ViT and CNN recipes differ);
- ``${ppreid_clip_weights:<open_clip model name>}``: ``openai`` where open_clip has OpenAI's weights for
  the model (ViT-B-16, RN50), else null (clip-tiny): the paper-scale CLIP recipes start from CLIP.
"""
from __future__ import annotations


def _add(*values):
    return sum(values)


def _vit_or_cnn(model_name, vit_value, cnn_value):
    from omegaconf import ListConfig, OmegaConf

    value = cnn_value if str(model_name).startswith("RN") else vit_value
    return OmegaConf.create(list(value)) if isinstance(value, (list, tuple, ListConfig)) else value


def _clip_weights(model_name):
    import open_clip

    return "openai" if "openai" in open_clip.list_pretrained_tags_by_model(str(model_name)) else None


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    from src.utils.config_groups import groups_help

    for name, fn in (("ppreid_groups", groups_help), ("ppreid_add", _add), ("ppreid_vit_or_cnn", _vit_or_cnn),
                     ("ppreid_clip_weights", _clip_weights)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
