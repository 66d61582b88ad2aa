"""What the privacy audit (``model=attack``) writes besides its numbers: the reconstruction sheet, the
log lines, and the ``audit`` block of results.json (what was audited, with what, at which cost)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ppreid.metrics.privacy import ssim

log = logging.getLogger(__name__)
CAPTION_WIDTH = 96  # pixels: "attacker diffusion" fits over an image this wide
# what an audited defence was trained with (results.json audit.extractor.privacy; labels of tables and plots)
PRIVACY_SETTINGS = ("privacy_weight", "privacy_loss", "d_weight", "defence", "bottleneck")


def run_identity(ckpt_path: str) -> dict[str, Any]:
    """What the checkpoint's run folder says about it (``<run>/results.json`` next to ``checkpoints/``)."""
    results = Path(ckpt_path).expanduser().resolve().parent.parent / "results.json"
    try:
        res = json.loads(results.read_text())
    except (OSError, ValueError):
        return {}
    overrides = [
        o
        for o in res.get("overrides") or []
        if o.split("=", 1)[0].lstrip("+~") not in ("seed", "ckpt_path") and not o.startswith("hydra.")
    ]
    return {
        "identity": res.get("identity"),
        "seed": res.get("seed"),
        "overrides": overrides,
        "test": res.get("test"),
        "results": str(results),
    }


def describe(obj: Any) -> Any:
    """Attacker settings as plain data (a ``functools.partial`` -> its target and keywords), for hashing."""
    if isinstance(obj, functools.partial):
        return {
            "_target_": f"{obj.func.__module__}.{obj.func.__qualname__}",
            **{k: describe(v) for k, v in obj.keywords.items()},
        }
    if isinstance(obj, dict):
        return {k: describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    return obj


def spec_hash(spec: dict[str, Any]) -> str:
    blob = json.dumps({k: spec.get(k) for k in ("model", "choices", "input")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def log_target(name: str, split: str, out: dict[str, Any]) -> None:
    """One INFO line per target and split: each attacker's SSIM, its null's and the gain, the leakage."""

    def leak(r):
        return "" if r.get("leakage_norm") is None else f", leak {r['leakage_norm']:+.2f}"

    parts = "; ".join(
        f"{a} SSIM {r['ssim']:.3f} (null {r['null_ssim']:.3f}, gain {r['ssim_gain']:+.3f}{leak(r)})"
        for a, r in out["attackers"].items()
    )
    log.info(
        "privacy of %s (%s): mean image SSIM %.3f; %s; strongest %s, most leaking %s",
        name,
        split,
        out["mean_image_ssim"],
        parts,
        out["strongest"],
        out.get("most_leaking") or "-",
    )


def save_reconstructions(
    path: Path,
    real: torch.Tensor,
    recons: dict[str, torch.Tensor],
    pids: torch.Tensor,
    rows: torch.Tensor,
    loggers: Sequence[Any] = (),
    key: str | None = None,
    masks: torch.Tensor | None = None,
) -> None:
    """``path``: one row per image of ``rows``: the real image, with ``masks`` (N,1,h,w person fractions, the
    records' person masks) the image with its background dimmed (what the region gains call person and
    background), then each attacker's reconstruction, each captioned with the SSIM of that reconstruction
    to the real image ("SSIM 0.30"); a label over each column and a legend on top say what they are."""
    from ppreid.callbacks.pictures import captioned_grid, labelled_sheet, to_pil

    height, width = real.shape[-2:]
    scale = max(1, math.ceil(CAPTION_WIDTH / width))
    size = (width * scale, height * scale)
    images, captions = [], []
    for i in rows.tolist():
        images.append(to_pil(real[i]).resize(size))
        captions.append(f"real id {int(pids[i])}")
        if masks is not None:  # the person as the masks draw it: the background at a quarter of its brightness
            person = masks[i].float().clamp(0.0, 1.0)
            images.append(to_pil(real[i] * (0.25 + 0.75 * person)).resize(size))
            captions.append(f"person {float(person.mean()):.0%}")
        for recon in recons.values():
            images.append(to_pil(recon[i]).resize(size))
            value = float(ssim(recon[i : i + 1], real[i : i + 1]))
            captions.append(f"SSIM {value:.2f}")  # the column label names the attacker
    mask_column = ["person mask"] if masks is not None else []
    sheet = captioned_grid(images, captions, columns=1 + len(mask_column) + len(recons))
    sheet = labelled_sheet(
        sheet,
        size,
        column_labels=["real image", *mask_column] + [f"attacker {name}" for name in recons],
        legend=[
            "rows: images the attackers are scored on (one person each, id = the dataset's pid)",
            "columns: the real image, then what each attacker reconstructs from the image's feature",
            *(
                ["person mask: the real image, background dimmed (caption: the person's share)"]
                if masks is not None
                else []
            ),
            "captions: SSIM of the reconstruction to the real image (1 = the same picture)",
        ],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    log.info("reconstructions: %s", path)
    from pytorch_lightning.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            caption = "real | " + " | ".join(recons) + " (caption: SSIM of each reconstruction to the real image)"
            lg.log_image(key=key or path.stem, images=[sheet], caption=[caption])


def save_curves(path: Path, curves: dict[str, dict[str, dict[str, Any]]]) -> None:
    """``attacker_curves.png``: one panel per suite (``cross``, ``in_domain/<target>``) and attacker kind, the
    validation loss (solid, the held-out training images) and the training loss (dashed) against the step,
    for the attacker and its null; a marker at the best validation step (the weights kept)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for suite, by_key in curves.items():
        for kind in dict.fromkeys(k.removesuffix("_null") for k in by_key):
            panels.append((suite, kind, {k: by_key[k] for k in (kind, f"{kind}_null") if k in by_key}))
    if not panels:
        return
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for ax, (suite, kind, lines) in zip(axes.flat, panels):
        for (key, curve), colour in zip(lines.items(), ("tab:blue", "tab:orange")):
            label = "null" if key.endswith("_null") else "attacker"
            if curve.get("val"):
                ax.plot(curve["step"], curve["val"], color=colour, lw=1.6, marker="o", ms=2, label=f"{label} val")
                ax.plot(curve["step"], curve["train"], color=colour, lw=1.0, ls="--", label=f"{label} train")
                if curve.get("best_step") in curve["step"]:
                    best = curve["step"].index(curve["best_step"])
                    ax.plot([curve["best_step"]], [curve["val"][best]], "k*", ms=8)
        ax.set_title(f"{suite}: {kind} ({lines.get(kind, {}).get('stopped', '-')})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("attacker losses (star: the best validation step, whose weights are scored)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log.info("attacker loss curves: %s", path)


def log_cost(cost: dict[str, float], cpu: dict[str, float]) -> None:
    """The audit's wall time per part, largest first, with its CPU time, and the totals."""
    parts = ", ".join(
        f"{k} {v:.0f} s (CPU {cpu.get(k, 0):.0f} s)" for k, v in sorted(cost.items(), key=lambda kv: -kv[1])
    )
    log.info("audit cost: %.0f s in all (CPU %.0f s); %s", sum(cost.values()), sum(cpu.values()), parts)


def audit_block(model, data_name: str, target_names: Sequence[str]) -> dict[str, Any]:
    """What was audited and with what, and ``group_hash``: runs with equal hashes audited models of one
    config (their seeds may differ) with one attack config, so tables may pool them."""
    spec = model.extractor_spec
    run = run_identity(model.extractor_ckpt)
    ident = run.get("identity") or {}
    extractor = {
        "ckpt": model.extractor_ckpt,
        "model": spec["choices"].get("model"),
        "backbone": model.backbone_name,
        "input": f"{model.input_size[0]}x{model.input_size[1]}",
        "num_classes": spec.get("num_classes"),
        "experiment": ident.get("experiment"),
        "config_hash": ident.get("config_hash"),
        "spec_hash": spec_hash(spec),
        "seed": run.get("seed"),
        "overrides": run.get("overrides"),
        "privacy": {k: spec["model"].get(k) for k in PRIVACY_SETTINGS if k in spec["model"]} or None,
        "run_results": run.get("results"),
    }
    reference = None
    if model.reference_spec is not None:
        ref_run = run_identity(model.reference_ckpt)
        reference = {
            "ckpt": model.reference_ckpt,
            "model": model.reference_spec["choices"].get("model"),
            "config_hash": (ref_run.get("identity") or {}).get("config_hash"),
            "spec_hash": spec_hash(model.reference_spec),
        }
    settings = {
        k: v
        for k, v in model.hparams.items()
        if k not in ("extractor_ckpt", "reference_ckpt", "num_pictures", "reconstruct_batch_size")
    }
    settings["attacker_settings"] = model.attacker_settings
    key = {
        "extractor": extractor["config_hash"] or extractor["spec_hash"],
        "reference": None if reference is None else (reference["config_hash"] or reference["spec_hash"]),
        "attack": settings,
        "data": data_name,
        "targets": list(target_names),
        "eval": {"flip": model.eval_options.flip, "rerank": model.eval_options.rerank},
    }
    group = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cross = model.suites.get("cross") or {}
    train = {
        "pairs": cross.get("pairs"),
        "val_pairs": cross.get("val_pairs"),
        "feat_dim": None if not cross else int(cross["feat_mean"].numel()),
        "steps": cross.get("steps"),
        "train_time_s": cross.get("train_time_s"),
        "early_stopping": dict(model.early_stopping),
    }
    return {
        "extractor": extractor,
        "reference": reference,
        "attackers": list(model.attacker_names),
        "splits": list(model.splits),
        "attack_size": list(model.attack_size),
        "train": train,
        "max_scored_images": model.max_scored,
        "cost_s": dict(model.cost),
        "cost_cpu_s": dict(model.cost_cpu),
        "cost_total_s": round(sum(model.cost.values()), 1),
        "curves": model.curves,
        "group_hash": group,
    }
