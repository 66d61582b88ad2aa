"""Checks of a composed train config that turn common slips into one clear line before anything runs.

Keys and types are checked while composing (the schemas of :mod:`ppreid.config.schemas`); these are the
value checks a type cannot express, cheap enough to run before any data is prepared or decoded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ppreid.utils.errors import ConfigValueError

WANDB_TARGET = "WandbLogger"


def check_run_config(cfg: DictConfig) -> None:
    """Refuse a non-integer seed, ``model.backbone=<string>``, a training run without epochs >= 1, batch
    sizes the P x K sampler cannot fill, a schedule outside the run, a GPU trainer without a GPU and wandb
    without credentials, each with the fix."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigValueError(f"seed={seed!r} must be an integer, e.g. seed=1 (or -m seed=1,2,3 for a sweep).")
    backbone = OmegaConf.select(cfg, "model.backbone", default=None)
    if isinstance(backbone, str):
        raise ConfigValueError(
            f"model.backbone={backbone!r} sets a string where a backbone config belongs; choose the backbone "
            f"group instead: backbone={backbone} (options: conf/backbone/*.yaml)."
        )
    if cfg.get("train", True):
        check_max_epochs(cfg.get("trainer") or {})
        check_batch_sizes(cfg.get("data") or {})
        check_schedules(cfg)
    check_accelerator(cfg.get("trainer") or {})
    check_wandb(cfg.get("logger") or {})


def check_max_epochs(trainer_cfg: Any) -> None:
    """A training run needs epochs >= 1 (the schema makes it an int): schedules are fractions of it, and 0
    would write an untrained model's results as a training run's."""
    value = trainer_cfg.get("max_epochs")
    if trainer_cfg.get("fast_dev_run"):
        return
    if value == 0:
        raise ConfigValueError(
            "trainer.max_epochs=0 with train=true trains nothing; give epochs >= 1, or evaluate "
            "without training: train=false ckpt_path=<checkpoint> (or no ckpt_path for the "
            "initial weights)."
        )
    if value < 0:
        raise ConfigValueError(
            f"trainer.max_epochs={value} (Lightning's 'train until stopped') gives the run and its "
            "learning-rate schedule no end; give a number of epochs >= 1, e.g. "
            "trainer.max_epochs=32."
        )


def check_batch_sizes(data_cfg: Any) -> None:
    """P x K batches: ``data.batch_size`` a positive multiple of ``data.num_instances`` (images per identity)."""
    batch, per_id = data_cfg.get("batch_size"), data_cfg.get("num_instances")
    if batch is None or per_id is None:
        return
    if per_id < 1:
        raise ConfigValueError(
            f"data.num_instances={per_id}: give images per identity >= 1, e.g. data.num_instances=4."
        )
    if batch < 1 or batch % per_id:
        suggestion = 16 * per_id if batch < 1 else max(per_id, batch // per_id * per_id)
        raise ConfigValueError(
            f"data.batch_size={batch} must be a positive multiple of data.num_instances={per_id} "
            f"(P identities x K images), e.g. data.batch_size={suggestion}."
        )
    test_batch = data_cfg.get("test_batch_size")
    if test_batch is not None and test_batch < 1:
        raise ConfigValueError(
            f"data.test_batch_size={test_batch}: give a batch size >= 1, e.g. data.test_batch_size=256."
        )


def check_schedules(cfg: DictConfig) -> None:
    """Build each learning-rate schedule of ``cfg.model`` on a dummy optimizer, so a warm-up or milestone
    outside its run (``model.scheduler.milestones=[40] trainer.max_epochs=2``) fails before any data is read.
    The schedules check themselves (ppreid.training.schedulers); a fast dev run fits any schedule."""
    import torch
    from hydra.utils import instantiate

    trainer_cfg = cfg.get("trainer") or {}
    model_cfg = cfg.get("model") or {}
    if trainer_cfg.get("fast_dev_run"):
        return
    parts = [("model.scheduler", model_cfg.get("scheduler"), trainer_cfg.get("max_epochs"), "trainer.max_epochs")]
    for k in (1, 2):
        stage = model_cfg.get(f"stage{k}") or {}
        key = f"model.stage{k}"
        parts.append((f"{key}.scheduler", stage.get("scheduler"), stage.get("epochs"), f"{key}.epochs"))
    for key, sched_cfg, length, length_key in parts:
        if sched_cfg is None or length is None or "_target_" not in sched_cfg:
            continue
        factory = instantiate(sched_cfg)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        factory(optimizer=optimizer, max_epochs=int(length), key=key, length_key=length_key)


def check_accelerator(trainer_cfg: Any) -> None:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigValueError(
                f"trainer.accelerator={accelerator} but torch sees no CUDA GPU on this machine; use trainer=cpu "
                "(or trainer=ddp_sim to simulate DDP on the CPU)."
            )


def check_wandb(logger_cfg: Any) -> None:
    """wandb online needs an API key; say how to log offline instead of failing inside wandb."""
    for lg in (logger_cfg or {}).values():
        if lg is None or not str(lg.get("_target_", "")).endswith(WANDB_TARGET):
            continue
        mode = os.environ.get("WANDB_MODE", "").lower()
        if lg.get("offline") or mode in ("offline", "disabled", "dryrun") or wandb_api_key_present():
            continue
        raise ConfigValueError(
            "logger=wandb has no W&B API key (WANDB_API_KEY unset, no `wandb login`); log locally with "
            "WANDB_MODE=offline (sync later with `wandb sync`), or run `wandb login` first."
        )


def wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.is_file() and host.split(":")[0] in netrc.read_text()
    except OSError:
        return False
