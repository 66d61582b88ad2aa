"""``loss_curves.png`` in the run folder at the end of training, for every model.

Panels (epoch on x, one curve per term; log scale when every value is positive):

- the model's own panels when it draws them: ``loss_curve_panels()`` (the privacy models: one panel per
  module, extractor, generator, discriminator, ..., with the phases shaded) or ``loss_history`` (the CLIP
  models: one panel per stage);
- otherwise the epoch means of every ``train/loss*`` value the model logs (BoT: ``loss`` and its terms);
- then ``val/mAP`` and ``val/R1`` (%) of every validated epoch (held-out source identities).

The recorded values are kept in checkpoints (the callback's state), so a resumed run draws the whole run.
With ``logger=wandb`` the picture is also logged as ``train/loss_curves``.
"""

from __future__ import annotations

import logging
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)

Points = list[tuple[int, float]]
PHASE_COLOURS = ("#f2f2f2", "#e3eefa", "#fbeee0", "#e8f5e4")


def plot_loss_curves(
    panels: dict[str, dict[str, Points]],
    path: Path,
    phases: Sequence[tuple[int, int, str]] = (),
    notes: dict[str, str] | None = None,
    percent: Sequence[str] = (),
    title: str | None = None,
) -> None:
    """One panel per key of ``panels`` (term -> [(epoch, value)]); a ``total`` or ``loss`` term is drawn
    bold. ``phases``: (first epoch, end epoch, name) spans shaded on every panel; ``notes``: a text shown
    in a panel (e.g. why it is empty); ``percent``: panels whose values are fractions, drawn in %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    notes = notes or {}
    names = [p for p in panels if any(panels[p].values()) or p in notes]
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), dpi=110, squeeze=False)
    epochs_seen = [e for p in names for pts in panels[p].values() for e, _ in pts]
    span = [e for s, t, _ in phases for e in (s, t - 1)] + epochs_seen
    for ax, name in zip(axes.flat, names):
        scale = 100.0 if name in percent else 1.0
        low, high = float("inf"), 0.0  # log scale only for positive values over more than a decade
        drawn = False
        for term, points in sorted(panels[name].items()):
            if not points:
                continue
            epochs, values = zip(*points)
            low, high = min(low, *values), max(high, *values)
            bold = term in ("total", "loss")
            ax.plot(epochs, [v * scale for v in values], marker="o", ms=3, lw=2.2 if bold else 1.2, label=term)
            drawn = True
        if drawn and name not in percent and low > 0 and high > 10 * low:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.2, not 2x10^-1
            ax.yaxis.set_minor_formatter(NullFormatter())
        if not drawn:
            ax.set_yticks([])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        for k, (start, end, phase) in enumerate(phases):
            ax.axvspan(start - 0.5, end - 0.5, color=PHASE_COLOURS[k % len(PHASE_COLOURS)], zorder=0)
            ax.text((start + end - 1) / 2, 1.0, phase, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=7, color="dimgrey")  # fmt: skip
        if span:
            ax.set_xlim(min(span) - 0.6, max(span) + 0.6)
        if name in notes:
            ax.text(0.5, 0.5, textwrap.fill(notes[name], 45), transform=ax.transAxes, ha="center", va="center",
                    fontsize=8, color="dimgrey")  # fmt: skip
        ax.set_title(name, pad=14 if phases else 6)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%" if name in percent else "epoch mean")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class LossCurvesCallback(pl.Callback):
    """Records epoch means of the logged training losses and the validation metrics, and draws
    ``loss_curves.png`` when training ends (see the module docstring).

    prefix: logged values whose name starts with it are training losses; val_metrics: validation values
    drawn in % (fractions in [0, 1])."""

    def __init__(self, prefix: str = "train/loss", val_metrics: Sequence[str] = ("val/mAP", "val/R1")) -> None:
        self.prefix = prefix
        self.val_metrics = tuple(val_metrics)
        self.train: dict[str, Points] = defaultdict(list)
        self.val: dict[str, Points] = defaultdict(list)
        self._epoch: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._drawn = False

    # ------------------------------------------------------------------ recording
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith(self.prefix) and value.numel() == 1:
                self._epoch[key.split("/", 1)[1]].append(value.detach())  # read at epoch end: no sync per step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        for term, values in self._epoch.items():
            if values:
                self.train[term].append((int(trainer.current_epoch), sum(float(v) for v in values) / len(values)))
        self._epoch = defaultdict(list)

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        """Validation during fit, and the last validation train.py runs after a fit whose final epoch had
        none (then the picture is drawn again with it)."""
        after_fit = trainer.state.fn == "validate" and self._drawn
        if trainer.sanity_checking or not (trainer.state.fn == "fit" or after_fit):
            return
        epoch = int(trainer.current_epoch) - (1 if after_fit else 0)  # the last trained epoch's weights
        for key in self.val_metrics:
            value = trainer.callback_metrics.get(key)
            if value is not None and value.numel() == 1:
                points = self.val[key.split("/", 1)[1]]
                points[:] = [p for p in points if p[0] != epoch] + [(epoch, float(value))]
        if after_fit:
            self._draw(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"train": dict(self.train), "val": dict(self.val)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = defaultdict(list, {k: [tuple(p) for p in v] for k, v in state_dict.get("train", {}).items()})
        self.val = defaultdict(list, {k: [tuple(p) for p in v] for k, v in state_dict.get("val", {}).items()})

    # ------------------------------------------------------------------ drawing
    def figure(self, pl_module) -> dict[str, Any]:
        """The keyword arguments of :func:`plot_loss_curves` for this run."""
        own = getattr(pl_module, "loss_curve_panels", None)
        history = getattr(pl_module, "loss_history", None)
        if callable(own):
            spec = dict(own())
        elif history:
            spec = {"panels": {f"{stage} losses": terms for stage, terms in sorted(history.items())}}
        else:
            spec = {"panels": {"training losses": dict(self.train)}}
        if any(self.val.values()):
            spec["panels"] = {**spec["panels"], "validation (held-out source identities)": dict(self.val)}
            spec["percent"] = ["validation (held-out source identities)"]
        return spec

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._draw(trainer, pl_module)

    def _draw(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        spec = self.figure(pl_module)
        if not any(any(terms.values()) for terms in spec["panels"].values()):
            return
        path = Path(trainer.default_root_dir) / "loss_curves.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_loss_curves(path=path, **spec)
        self._drawn = True
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image(key="train/loss_curves", images=[str(path)])
