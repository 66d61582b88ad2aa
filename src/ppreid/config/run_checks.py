"""Checks of a composed train config that turn common slips into one clear line before anything runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ppreid.utils.errors import ConfigValueError

WANDB_TARGET = "WandbLogger"


def check_run_config(cfg: DictConfig) -> None:
    """Refuse a non-integer seed, ``model.backbone=<string>``, a training run without a whole number of
    epochs >= 1, a GPU trainer without a GPU and wandb without credentials, each with the fix."""
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
    check_accelerator(cfg.get("trainer") or {})
    check_wandb(cfg.get("logger") or {})


def check_max_epochs(trainer_cfg: Any) -> None:
    """A training run needs a whole number of epochs >= 1: schedules are fractions of it, and 0 would
    write an untrained model's results as a training run's."""
    value = trainer_cfg.get("max_epochs")
    if trainer_cfg.get("fast_dev_run"):
        return
    if value is None:
        raise ConfigValueError("trainer.max_epochs is not set; give the number of epochs, e.g. trainer.max_epochs=32.")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigValueError(
            f"trainer.max_epochs={value!r} is not a whole number of epochs; write it in digits, "
            "e.g. trainer.max_epochs=2."
        )
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
