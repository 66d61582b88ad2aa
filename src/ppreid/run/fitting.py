"""The steps of ``train.py``'s run around ``trainer.fit``: the precision and DDP strategy a model needs, the
fit itself (resume, a last validation), and what results.json records of the training (its loss and
validation curves, the evaluated checkpoint)."""

from __future__ import annotations

from omegaconf import DictConfig


def checkpoint_record(path: str, meta: dict, trained_by: dict | None) -> dict:
    """results.json's ``checkpoint``: the evaluated file, how far its run had got, and what trained it."""
    epoch = meta.get("epoch")
    return {
        "path": str(path),
        "epochs_completed": None if epoch is None else int(epoch) + 1,
        "global_step": meta.get("global_step"),
        "training": trained_by,
    }


def training_signal(trainer, model) -> dict:
    """What the run saw while it trained, for the study tables (``tables.py --metrics loss:<term>``): epoch
    means ``{"loss": {term: [[epoch, mean], ...]}, "val": {metric: [[epoch, value], ...]}}`` from the
    loss-curves callback (``train/loss*``; the validation metrics per validated epoch), plus the model's own
    per-stage / per-phase history where it keeps one (``loss_history``: terms ``<stage>/<term>``, e.g.
    ``stage2/i2t_ce``); empty without either."""
    from ppreid.callbacks.loss_curves import LossCurvesCallback

    def points(curve) -> list[list[float]]:
        return [[int(e), float(v)] for e, v in curve]

    out: dict[str, dict[str, list]] = {}
    for cb in trainer.callbacks:
        if isinstance(cb, LossCurvesCallback):
            out = {
                part: {k: points(c) for k, c in sorted(cs.items()) if c}
                for part, cs in (("loss", cb.train), ("val", cb.val))
            }
    history = getattr(model, "loss_history", None) or {}
    for stage, terms in sorted(history.items()):
        out.setdefault("loss", {}).update({f"{stage}/{t}": points(c) for t, c in sorted(terms.items()) if c})
    return out


def resolve_precision(cfg: DictConfig, log) -> None:
    """``trainer.precision=auto`` (typed) -> bf16-mixed on a native-bf16 CPU, else 32-true; says which."""
    from omegaconf import open_dict

    from ppreid.config.resolvers import _precision

    with open_dict(cfg):
        cfg.trainer.precision = str(
            _precision(cfg.trainer.get("precision", "32-true"), cfg.trainer.get("accelerator", "auto"))
        )
    # auto would choose bf16 here only on a CPU run with native bf16
    auto = _precision("auto", cfg.trainer.get("accelerator", "auto"))
    if cfg.trainer.precision == "bf16-mixed" == auto:
        log.info(
            "trainer.precision=bf16-mixed: this CPU computes bf16 natively (about half the time of fp32 "
            "steps); trainer.precision=32-true for exact fp32"
        )


def ddp_for_model(cfg: DictConfig, model, log) -> None:
    """Models whose steps leave some trainable parameters unused (frozen stages, alternating
    optimizers: ``ddp_find_unused_parameters = True``) need DDP's unused-parameter detection."""
    from omegaconf import open_dict

    strategy = cfg.trainer.get("strategy")
    if (
        model.ddp_find_unused_parameters
        and isinstance(strategy, str)
        and strategy.startswith("ddp")
        and "find_unused_parameters" not in strategy
    ):
        with open_dict(cfg):
            cfg.trainer.strategy = f"{strategy}_find_unused_parameters_true"
        log.info(
            "trainer.strategy=%s (%s leaves parameters unused in some steps)",
            cfg.trainer.strategy,
            type(model).__name__,
        )


def fit_and_validate(trainer, model, datamodule, cfg: DictConfig) -> None:
    """trainer.fit (resuming from ``ckpt_path``), then a last validation if the final epoch had none,
    so ``val/*`` (what model selection may look at) describes the final weights. A resume says where its
    new checkpoints go (instead of Lightning's "dirpath has changed" warning)."""
    import logging
    import warnings

    log = logging.getLogger("train")
    from ppreid.utils.errors import ConfigValueError

    if cfg.ckpt_path:
        dirs = sorted({str(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)})
        log.info(
            "resuming from %s; new checkpoints go to %s",
            cfg.ckpt_path,
            ", ".join(dirs) or "nowhere (no checkpoint callback in this run)",
        )
    try:
        with warnings.catch_warnings():  # resuming into a new run folder: said above, in our words
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from ", category=UserWarning)
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except RuntimeError as err:
        if "Error(s) in loading state_dict" not in str(err):
            raise
        first = [line.strip() for line in str(err).splitlines() if "size mismatch" in line or "Missing" in line][:2]
        raise ConfigValueError(
            f"ckpt_path={cfg.ckpt_path} does not fit this run's model ({'; '.join(first)}); "
            "resume with the config (and data) the checkpoint was trained with."
        ) from None
    every = int(cfg.trainer.get("check_val_every_n_epoch") or 1)
    if datamodule.has_val and not cfg.trainer.get("fast_dev_run") and trainer.max_epochs % every != 0:
        trainer.validate(model, datamodule=datamodule, verbose=False)
