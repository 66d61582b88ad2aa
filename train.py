"""Train and/or evaluate a ReID model: ``python train.py [group=option ...] [key=value ...]``.

Default: the BoT baseline with a tiny CNN on the embedded procedural GenePerson-mini data
(written on first use), evaluated on its held-out target domains. See README.md.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.utils.errors import find_input_error  # noqa: E402


def run(cfg: DictConfig) -> dict:
    """Build everything from ``cfg``, fit and/or test, write ``results.json``; returns its content."""
    import logging

    import pytorch_lightning as pl
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from src.utils.fileops import atomic_write_json
    from src.utils.run_info import git_commit, metrics_by_target

    log = logging.getLogger("train")
    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(resolved)

    if cfg.train:
        log.info("training %s on %s", cfg.model.name, cfg.data.name)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    test_metrics = {}
    if cfg.test:
        if cfg.train:
            ckpt = None  # the weights at the end of training (BoT protocol: last epoch)
        else:
            ckpt = cfg.ckpt_path
            if ckpt is None:
                log.warning("train=false and ckpt_path=null: evaluating the initial weights.")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
        test_metrics = metrics_by_target(trainer.callback_metrics, "test")

    results = {
        "test": test_metrics,
        "model": cfg.model.get("name"),
        "data": cfg.data.get("name"),
        "seed": cfg.seed,
        "train": bool(cfg.train),
        "ckpt_path": cfg.ckpt_path,
        "git_commit": git_commit(ROOT),
        "wall_time_s": round(time.time() - start, 2),
        "run_dir": str(output_dir),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
    }
    scalars = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "results.json", results)
        for target, m in test_metrics.items():
            log.info("test/%s: %s", target, "  ".join(f"{k}={v:.4f}" for k, v in m.items()))
        log.info("results written to %s", output_dir / "results.json")
    return {**results, "scalars": scalars}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        results = run(cfg)
    except Exception as exc:  # a bad-input error is reported as one clear line, no traceback
        err = find_input_error(exc)
        if err is None:
            raise
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(1)
    metric = cfg.get("optimized_metric")  # e.g. "test/mAP" for hparams_search sweeps
    return results["scalars"].get(metric) if metric else None


if __name__ == "__main__":
    main()
