"""Typed schemas of the config groups, registered with Hydra's ConfigStore.

Each group option lists its schema first in its defaults (``- bot_schema`` in conf/model/bot.yaml, or
``- clipreid_schema@model`` from a ``# @package _global_`` file), so Hydra merges the YAML into a
closed, typed node: a misspelt key anywhere (command line, experiment, recipe) or a value of the wrong
type (``trainer.max_epochs=two``) fails while composing, naming the key. Every field is ``MISSING``
(its value comes from the YAML), except the few Trainer keys that only some configs set (``debug``,
the two-stage models), which carry Lightning's own defaults. Nested parts whose keys vary by option
(optimizers, schedules, attacker sub-configs) stay ``Any``; the keys a model reads at its top level
are typed. Value ranges a type cannot express are checked by :mod:`ppreid.config.run_checks` before
any data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any  # noqa: UP035 (OmegaConf reads typing's generics)

from omegaconf import MISSING

# ----------------------------------------------------------------------------------- trainer


@dataclass
class TrainerSchema:
    """conf/trainer/*.yaml: pytorch_lightning.Trainer's arguments that our configs set."""

    _target_: str = MISSING
    default_root_dir: str = MISSING
    min_epochs: int = MISSING
    max_epochs: int = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING  # 1, [0, 1] or "auto"
    precision: str = MISSING
    check_val_every_n_epoch: int | None = MISSING
    log_every_n_steps: int = MISSING
    deterministic: Any = MISSING  # true | false | "warn"
    num_sanity_val_steps: int = MISSING
    use_distributed_sampler: bool = MISSING
    # set by debug=default / debug=fdr and by the two-stage CLIP models; Lightning's defaults otherwise
    limit_train_batches: Any = None  # an int is batches, a float a fraction (so not typed as float)
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    fast_dev_run: Any = False  # true or a number of batches
    reload_dataloaders_every_n_epochs: int = 0


@dataclass
class DDPSimTrainerSchema(TrainerSchema):
    strategy: str = MISSING


@dataclass
class DDPTrainerSchema(DDPSimTrainerSchema):
    num_nodes: int = MISSING
    sync_batchnorm: bool = MISSING


# -------------------------------------------------------------------------------------- data


@dataclass
class TrainTransformsSchema:
    flip_prob: float = MISSING
    padding: int = MISSING
    random_erasing_prob: float = MISSING
    mean: list[float] | None = MISSING  # null: the backbone's own normalization
    std: list[float] | None = MISSING


@dataclass
class TestTransformsSchema:
    mean: list[float] | None = MISSING
    std: list[float] | None = MISSING


@dataclass
class ValSplitSchema:
    identities: Any = MISSING  # a fraction in [0, 1) (float) or a count (int): not interchangeable
    seed: int = MISSING


@dataclass
class DataSchema:
    """conf/data/*.yaml (via conf/data/_reid_base.yaml): ppreid.data.datamodule.ReIDDataModule."""

    _target_: str = MISSING
    name: str = MISSING
    height: int = MISSING
    width: int = MISSING
    train_transforms: TrainTransformsSchema = MISSING
    test_transforms: TestTransformsSchema = MISSING
    batch_size: int = MISSING
    num_instances: int = MISSING
    test_batch_size: int = MISSING
    num_workers: int = MISSING
    pin_memory: bool = MISSING
    verify_images: Any = MISSING  # true | false | auto
    verify_max_images: int = MISSING
    cache_images: Any = MISSING  # true | false | auto
    cache_max_gib: float = MISSING
    channels_last: bool = MISSING
    check_targets: bool = MISSING
    sampler_seed: int = MISSING
    val_split: ValSplitSchema = MISSING
    prepare: Any = MISSING  # null or a _partial_ call that writes the data on first use
    sources: list[dict[str, Any]] = MISSING
    targets: list[dict[str, Any]] = MISSING


@dataclass
class GenePersDataSchema(DataSchema):
    """data=genepers / genepers_to_mini: a GenePerson folder (``data.root``) as the source."""

    root: str = MISSING


@dataclass
class SandboxCorpusDataSchema(DataSchema):
    """data=sandbox_corpus: ppreid.data.colour_batches.ColourBatchesDataModule (colour-aware P x K batches)."""

    colour_batches: dict[str, Any] = MISSING


# ---------------------------------------------------------------------------------- backbone


@dataclass
class TinyCNNSchema:
    _target_: str = MISSING
    channels: list[int] = MISSING
    out_dim: int = MISSING
    last_stride: int = MISSING
    blocks_per_stage: int = MISSING
    pretrained: str | None = MISSING


@dataclass
class ResNet50Schema:
    _target_: str = MISSING
    last_stride: int = MISSING
    pretrained: str | None = MISSING


@dataclass
class OpenCLIPSchema:
    """backbone=clip_vit_b16: an open_clip image tower."""

    _target_: str = MISSING
    model_name: str = MISSING
    image_size: list[int] = MISSING
    pos_embed_interpolation: str = MISSING
    quick_gelu: bool | None = MISSING
    pretrained: str | None = MISSING  # an open_clip tag, a weights file, sandbox (clip_tiny) or null


@dataclass
class OpenCLIPResNetSchema(OpenCLIPSchema):
    last_stride: int = MISSING


@dataclass
class ClipTinySchema(OpenCLIPSchema):
    sandbox: dict[str, Any] = MISSING  # what pretrained=sandbox builds (ppreid.run.sandbox_clip)


# ------------------------------------------------------------------------------------ models


@dataclass
class ReIDModelSchema:
    """Keys every ReID model reads."""

    _target_: str = MISSING
    _convert_: str = MISSING
    name: str = MISSING
    backbone: Any = MISSING  # ${backbone}
    eval_metric: str = MISSING
    max_rank: int = MISSING


@dataclass
class BoTSchema(ReIDModelSchema):
    losses: Any = MISSING  # ${loss}
    pooling: str = MISSING
    neck_feat: str = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING


@dataclass
class TwoStageCLIPSchema(ReIDModelSchema):
    losses: Any = MISSING
    test_feature: str = MISSING
    neck_feat: str = MISSING
    text_batch_size: int = MISSING
    stage1: dict[str, Any] = MISSING
    stage2: dict[str, Any] = MISSING
    stage1_loss: dict[str, Any] = MISSING
    stage2_loss: dict[str, Any] = MISSING


@dataclass
class CLIPReIDSchema(TwoStageCLIPSchema):
    template: str = MISSING
    prompt_init_std: float = MISSING


@dataclass
class PDMSchema(TwoStageCLIPSchema):
    templates: dict[str, str] = MISSING
    inversion: dict[str, Any] = MISSING
    style_label: str = MISSING
    restyle_strength: float = MISSING
    grad_norm_interval: int = MISSING


@dataclass
class PhasesSchema:
    reversal_from: Any = MISSING  # an int epoch or a fraction of the run
    joint_from: Any = MISSING


@dataclass
class PoolDefenceSchema:
    """model.defence=pool: decoders of different ages."""

    size: int = MISSING
    warmup_batches: int = MISSING
    aggregate: str = MISSING
    pixel_loss: str = MISSING
    restart_seed: int = MISSING
    decoder: dict[str, Any] = MISSING
    optimizer: dict[str, Any] = MISSING


@dataclass
class DependenceDefenceSchema:
    """model.defence=dependence: a within-identity dependence penalty."""

    measure: str = MISSING
    sigma: float | None = MISSING


@dataclass
class RidgeDefenceSchema:
    """model.defence=ridge: a closed-form kernel ridge decoder, fitted again on every batch."""

    ridge: float = MISSING


@dataclass
class AdversarySchema:
    """model.adversary: how hard the defence's adversaries train (as the audit's attackers do)."""

    steps_per_batch: int = MISSING
    pretrain_steps: int = MISSING
    pretrain_batch_size: int = MISSING
    ssim_weight: float = MISSING


@dataclass
class PrivacyTermsSchema:
    """model.privacy_terms: weights of E's privacy terms (whole image, swap, background)."""

    image: float = MISSING
    swap: float = MISSING
    background: float = MISSING


@dataclass
class LeakBranchSchema:
    """model.leak_branch: the background thumbnail of model.leak=background."""

    border: float = MISSING
    rows: int = MISSING
    scale: float = MISSING


@dataclass
class PrivacyGANSchema(BoTSchema):
    """model=privacy_gan: a BoT extractor and its privacy defence (model.defence and its options)."""

    defence: str = MISSING
    privacy_loss: str = MISSING
    privacy_weight: float = MISSING
    neg_pixel_kind: str = MISSING
    pixel_loss: str = MISSING
    pixel_weight: float = MISSING
    gan_loss: str = MISSING
    d_weight: float = MISSING
    r1_gamma: float = MISSING
    d_every: int = MISSING
    r1_every: int = MISSING
    g_every: int = MISSING
    phases: PhasesSchema = MISSING
    image_size: list[int] = MISSING
    pool: PoolDefenceSchema = MISSING
    dependence: DependenceDefenceSchema = MISSING
    ridge: RidgeDefenceSchema = MISSING
    bottleneck: Any = MISSING  # null or e.g. {beta: 1.0e-3, stored: sample} (Any: a command line may set it)
    generator: dict[str, Any] = MISSING
    discriminator: dict[str, Any] = MISSING
    g_optimizer: dict[str, Any] = MISSING
    d_optimizer: dict[str, Any] = MISSING
    adversary: AdversarySchema = MISSING
    privacy_terms: PrivacyTermsSchema = MISSING
    background_border: float = MISSING
    leak: str = MISSING
    leak_branch: LeakBranchSchema = MISSING


@dataclass
class ClipPretrainSchema(ReIDModelSchema):
    text_source: str = MISSING
    identity_level: bool = MISSING
    caption_truth: bool = MISSING
    caption_kinds: dict[str, float] = MISSING
    captions: Any = MISSING
    logit_scale_init: float = MISSING
    max_logit_scale: float = MISSING
    weights_file: str = MISSING
    picture: dict[str, int] = MISSING
    warmup_steps: int = MISSING
    seed: int = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    caption_tokens: int | None = MISSING
    schedule: str = MISSING
    no_decay_1d: bool = MISSING
    loss_in_fp32: bool = MISSING
    identity_text: bool = MISSING
    text: bool = MISSING
    augment: dict[str, Any] = MISSING
    attribute_weight: float = MISSING


@dataclass
class AttackSchema:
    """model=attack: the privacy audit (attackers' own sub-configs stay untyped)."""

    _target_: str = MISSING
    _convert_: str = MISSING
    name: str = MISSING
    extractor_ckpt: str | None = MISSING
    reference_ckpt: str | None = MISSING
    attackers: list[str] = MISSING
    audit_split: str = MISSING
    split_seed: int = MISSING
    train_flip: bool = MISSING
    num_pictures: int = MISSING
    reconstruct_batch_size: int = MISSING
    probes: dict[str, Any] = MISSING
    early_stopping: dict[str, Any] = MISSING
    attack_size: Any = (
        MISSING  # [height, width] or None (typed Any: OmegaConf merges MISSING over an optional list's None)
    )
    max_scored_images: int | None = MISSING
    in_domain_steps: float = MISSING
    l1: dict[str, Any] = MISSING
    gan: dict[str, Any] = MISSING
    diffusion: dict[str, Any] = MISSING
    optim: dict[str, Any] = MISSING
    own: dict[str, Any] = MISSING


SCHEMAS: dict[str, dict[str, type]] = {
    "trainer": {"trainer": TrainerSchema, "ddp_sim_trainer": DDPSimTrainerSchema, "ddp_trainer": DDPTrainerSchema},
    "data": {
        "data": DataSchema,
        "genepers_data": GenePersDataSchema,
        "sandbox_corpus_data": SandboxCorpusDataSchema,
    },
    "backbone": {
        "tiny_cnn": TinyCNNSchema,
        "resnet50": ResNet50Schema,
        "open_clip": OpenCLIPSchema,
        "open_clip_resnet": OpenCLIPResNetSchema,
        "clip_tiny": ClipTinySchema,
    },
    "model": {
        "bot": BoTSchema,
        "clipreid": CLIPReIDSchema,
        "pdm": PDMSchema,
        "privacy_gan": PrivacyGANSchema,
        "clip_pretrain": ClipPretrainSchema,
        "attack": AttackSchema,
    },
}


def register_schemas() -> None:
    """Store every schema as ``<group>/<name>_schema`` (idempotent: the store keeps the last one)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"{name}_schema", node=node)
