"""Train and/or evaluate a ReID model: ``python train.py [group=option ...] [key=value ...]``.

Default: the BoT baseline with a tiny CNN on the embedded procedural GenePerson-mini data (written
on first use), validated on held-out source identities and tested on its held-out target domains.
``python train.py train=false ckpt_path=X data=<any data>`` evaluates a checkpoint on any targets:
the model is rebuilt from the checkpoint itself. See README.md and docs/architecture.md.
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

from ppreid.config.resolvers import register_resolvers  # noqa: E402
from ppreid.utils.errors import find_reported_error  # noqa: E402

register_resolvers()


def _hydra_runtime():
    """(task overrides, group choices) of this run ([] and {} outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    from ppreid.config.config_groups import effective_choice

    if not HydraConfig.initialized():
        return [], {}
    hc = HydraConfig.get()
    return list(hc.overrides.task), {g: effective_choice(g, c) for g, c in hc.runtime.choices.items()}


def build_model_and_data(cfg: DictConfig, log):
    """Instantiate (model, datamodule, checkpoint spec or None, group choices, the checkpoint's epoch and
    global_step) for this run.

    Evaluation of a checkpoint (``train=false ckpt_path=X``) rebuilds the model from the checkpoint's
    own spec, with its input size and normalization; training (and resuming) builds it from ``cfg``.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ppreid.training import checkpoint as ck

    overrides, choices = _hydra_runtime()
    explicit = ck.explicit_overrides(overrides)
    ckpt = ck.read_checkpoint(cfg.ckpt_path) if cfg.ckpt_path else None
    spec = ck.spec_of(ckpt) if ckpt is not None else None
    if spec is not None:
        ck.check_architecture(spec, choices, explicit["groups"], cfg.ckpt_path)

    if spec is not None and not cfg.train:
        log.info("evaluating %s: %s", cfg.ckpt_path, ck.describe(spec))
        with ck.weights_from_checkpoint(cfg.ckpt_path):
            model_cfg = ck.model_config_from_spec(spec, cfg, explicit["keys"])
            model = instantiate(model_cfg, num_classes=spec["num_classes"])
    elif ckpt is not None:  # resuming: every weight comes from the checkpoint
        with ck.weights_from_checkpoint(cfg.ckpt_path):
            model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
            model = instantiate(ck.without_pretrained(model_cfg))
    else:
        model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data, _convert_="all")
    if spec is not None and not cfg.train:
        inp = spec["input"]
        if (datamodule.height, datamodule.width) != (inp["height"], inp["width"]):
            log.info(
                "input size %dx%d from the checkpoint (data config: %dx%d)",
                inp["height"],
                inp["width"],
                datamodule.height,
                datamodule.width,
            )
        datamodule.height, datamodule.width = int(inp["height"]), int(inp["width"])
        for tf in (datamodule.train_transform_cfg, datamodule.test_transform_cfg):
            tf["mean"], tf["std"] = list(inp["mean"]), list(inp["std"])
    elif model.input_normalization() is not None:
        datamodule.use_backbone_normalization(*model.input_normalization())

    lazy = model.lazy_state_prefixes
    if ckpt is not None and not cfg.train:
        ck.load_model_weights(model, ckpt["state_dict"], cfg.ckpt_path, lazy_prefixes=lazy)
    elif ckpt is not None:
        problems = ck.state_dict_mismatch(model.state_dict(), ckpt["state_dict"], lazy)
        if problems:
            from ppreid.utils.errors import ConfigValueError

            raise ConfigValueError(
                f"ckpt_path={cfg.ckpt_path} cannot be resumed with this model config "
                f"({problems}); resume with the config the checkpoint was trained with."
            )
    if spec is not None and not cfg.train:
        model.build_spec = {k: v for k, v in spec.items() if k != "num_classes"}
    else:
        mean, std = datamodule.normalization()
        model.build_spec = ck.build_spec(cfg.model, choices, datamodule.height, datamodule.width, mean, std)
    model.configure_evaluation(cfg.get("eval"))
    ckpt_meta = {k: ckpt.get(k) for k in ("epoch", "global_step")} if ckpt is not None else {}
    return model, datamodule, spec, choices, ckpt_meta


def _fmt(value) -> str:
    return "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def run(cfg: DictConfig, started_at: float | None = None) -> dict:
    """Build everything from ``cfg``, fit and/or test, write ``results.json``; returns its content.

    started_at: when the run started (``run_status.run_start_time()``: the process start for a process's
    first run), the origin of ``wall_time_s``; ``run_time_s`` counts from this call."""
    import logging

    log = logging.getLogger("train")
    start = time.time()
    started_at = start if started_at is None else started_at
    log.info("run folder %s: importing PyTorch and Lightning ...", cfg.paths.output_dir)
    from ppreid.run.fitting import (
        checkpoint_record,
        ddp_for_model,
        fit_and_validate,
        resolve_precision,
        training_signal,
    )
    from ppreid.utils.console import library_warnings_ignored, quiet_libraries, results_table

    quiet_libraries()
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ppreid.config.run_checks import check_run_config
    from ppreid.run.sandbox_clip import resolve_pretrained_sandbox
    from ppreid.training import checkpoint as ck
    from ppreid.utils.fileops import atomic_write_json, atomic_write_text
    from ppreid.utils.run_info import (
        checkpoint_training,
        describe_evaluation,
        evaluation_identity,
        evaluation_options,
        experiment_identity,
        git_commit,
        metrics_by_target,
        run_environment,
        stage_metrics,
    )

    check_run_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    # backbone.pretrained=sandbox -> its weights file, built first when missing (before the seed: a build
    # leaves the run's random state as a reuse does)
    resolve_pretrained_sandbox(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    log.info("building the model (%s) and the data (%s) ...", cfg.model.get("name"), cfg.data.get("name"))
    model, datamodule, spec, choices, ckpt_meta = build_model_and_data(cfg, log)
    ddp_for_model(cfg, model, log)
    resolve_precision(cfg, log)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not loggers:  # nothing to record learning rates into (e.g. debug=fdr)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_model_summary=False
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "config_resolved.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    for lg in loggers:
        lg.log_hyperparams(resolved)
    num_params = sum(p.numel() for p in model.parameters())
    log.info(
        "model %s, backbone %s: %.2f M parameters",
        cfg.model.get("name"),
        (spec or {}).get("choices", {}).get("backbone") or choices.get("backbone") or model.backbone_name,
        num_params / 1e6,
    )
    commit = git_commit(ROOT)
    evaluation = evaluation_options(cfg.get("eval"))
    identity = experiment_identity(resolved, choices, (spec or {}).get("choices"))
    if cfg.train and model.build_spec is not None:  # checkpoints say what trained them
        model.build_spec["training"] = {
            "identity": identity,
            "seed": cfg.seed,
            "git_commit": commit,
            "run_dir": str(output_dir),
        }
    eval_only = spec is not None and not cfg.train  # a checkpoint evaluated: record what trained it
    trained_by = checkpoint_training(spec, cfg.ckpt_path) if eval_only else None
    if trained_by is not None:
        set_keys = ck.explicit_overrides(_hydra_runtime()[0])["keys"]
        identity = evaluation_identity(trained_by, resolved, evaluation, set_keys)
        log.info(
            "checkpoint trained by: %s, seed %s, %s epochs (run %s)",
            ", ".join(f"{k} {_fmt(trained_by['identity'].get(k))}" for k in ("model", "backbone", "data")),
            trained_by.get("seed"),
            trained_by["identity"].get("epochs"),
            trained_by.get("run_dir"),
        )
    elif eval_only:
        log.warning(
            "%s does not record its training run (an older checkpoint without results.json beside it): "
            "results.json's identity describes this evaluation command instead",
            cfg.ckpt_path,
        )

    val_metrics = {}
    if cfg.train:
        log.info("training %s on %s", cfg.model.name, cfg.data.name)
        with library_warnings_ignored(*model.expected_warnings):
            fit_and_validate(trainer, model, datamodule, cfg)
        val_metrics = stage_metrics(trainer.callback_metrics, "val")  # test resets callback_metrics
    scalars = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    test_metrics = {}
    if cfg.test:
        if not cfg.train and cfg.ckpt_path is None and not model.loads_own_weights:
            log.warning("train=false and ckpt_path=null: evaluating the initial (untrained) weights.")
        log.info("testing: %s", describe_evaluation(evaluation))
        with library_warnings_ignored(*model.expected_warnings):
            trainer.test(model, datamodule=datamodule, verbose=False)
        test_metrics = metrics_by_target(trainer.callback_metrics, "test")

    tr = cfg.trainer
    limited = [
        k for k in ("limit_train_batches", "limit_val_batches", "limit_test_batches") if tr.get(k) not in (None, 1.0)
    ]
    results = {
        "test": test_metrics,
        **model.extra_results,
        "val": val_metrics,
        **({"training": training_signal(trainer, model)} if cfg.train else {}),
        "identity": identity,
        "evaluation": {**evaluation, **({"data": cfg.data.get("name"), "seed": cfg.seed} if eval_only else {})},
        **({"checkpoint": checkpoint_record(cfg.ckpt_path, ckpt_meta, trained_by)} if eval_only else {}),
        "debug": bool(choices.get("debug") not in (None, "null") or tr.get("fast_dev_run")),
        "partial": bool(limited or tr.get("fast_dev_run")),
        "model": cfg.model.get("name"),
        "data": identity.get("data") if trained_by else cfg.data.get("name"),
        "seed": trained_by.get("seed") if trained_by else cfg.seed,
        "train": bool(cfg.train),
        "ckpt_path": cfg.ckpt_path,
        "git_commit": commit,
        "environment": run_environment(cfg.trainer.get("precision")),
        "wall_time_s": round(time.time() - started_at, 2),  # from the process start: imports count
        "run_time_s": round(time.time() - start, 2),
        "run_dir": str(output_dir),
        "overrides": _hydra_runtime()[0],
    }
    scalars.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "results.json", results)
        if test_metrics:
            log.info("\n%s", results_table(test_metrics, note=describe_evaluation(evaluation)))
        log.info("results written to %s", output_dir / "results.json")
        if cfg.train and (not trainer.checkpoint_callbacks or trainer.fast_dev_run):
            debug = choices.get("debug")
            how = (
                f"debug={debug} writes no checkpoint; run without debug={debug} (or with trainer.max_epochs=1)"
                if debug not in (None, "null")
                else "no checkpoint written (trainer.fast_dev_run or callbacks.model_checkpoint=null)"
            )
            log.info("%s to get one to evaluate or audit", how)
    return {**results, "scalars": scalars}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from ppreid.config.compose_errors import task_started
    from ppreid.utils.run_status import RunStatus, log_to_files, run_start_time

    task_started()
    started_at = run_start_time()  # results.json's wall_time_s and status.json count from the same start
    status = RunStatus(cfg.paths.output_dir, started_at=started_at)
    status.running()
    try:
        results = run(cfg, started_at=started_at)
    except KeyboardInterrupt:
        status.interrupted()
        raise
    except SystemExit as exc:  # Lightning's SIGTERMException: a scheduler's time limit or kill stopped the run
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if isinstance(exc, SIGTERMException):
            status.interrupted("stopped by SIGTERM")
            log_to_files("stopped by SIGTERM: the run is incomplete (no results.json)", level=30)  # WARNING
        raise
    except Exception as exc:  # bad input or a diverged training is reported as one clear line, no traceback
        err = find_reported_error(exc)
        if err is None:  # a bug or a library failure: the traceback goes to the console and the log
            status.failed(f"{type(exc).__name__}: {exc}")
            log_to_files(f"error: {type(exc).__name__}: {exc}", exc_info=exc)
            raise
        status.failed(str(err))
        log_to_files(f"error: {err}")
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(1)
    status.completed()
    metric = cfg.get("optimized_metric")  # e.g. "val/mAP" for hparams_search sweeps
    if metric and metric.startswith("test/"):
        print(
            f"warning: optimized_metric={metric} selects on the test targets; use val/mAP "
            "(held-out source identities) for honest model selection.",
            file=sys.stderr,
        )
    return results["scalars"].get(metric) if metric else None


if __name__ == "__main__":
    from ppreid.config.compose_errors import run_reporting_compose_errors

    run_reporting_compose_errors(main, "train")
