"""One target's ``privacy`` entry of an audit (``model=attack``): the cross-domain attackers (trained on the
source) and the in-domain ones (trained on half of this target's identities) scored on its images, the
linear attribute probes, and the reconstructions picture. ``model`` is the :class:`AttackModel`
(src/ppreid/audit/attack.py) that collected the target's features and images and holds the suites."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ppreid.audit import report as report
from ppreid.audit import scoring as scoring
from ppreid.audit import suite_training as suite_training
from ppreid.metrics.attribute_probe import probe_attributes

log = logging.getLogger(__name__)

# the keys a split's block (``cross_domain`` / ``in_domain``) carries from the scored suite
SPLIT_KEYS = (
    "image_specific_gain",
    "background_gain",
    "person_gain",
    "ssim_gain",
    "strongest",
    "strongest_by",
    "adversary_strength",
)


def probe(model, train_feats, train_attrs, test_feats, test_attrs) -> dict[str, Any]:
    """The attribute probes of ``probes`` (nuisance, soft biometrics) fitted on one set, scored on another."""
    groups = {g: model.probes[g] for g in ("nuisance", "soft_biometric")}
    steps = 1 if model.trainer.fast_dev_run else int(model.probes["steps"])
    lr, decay = float(model.probes["lr"]), float(model.probes["weight_decay"])
    return probe_attributes(train_feats, train_attrs, test_feats, test_attrs, groups, steps, lr, decay)


def audit_target(model, target, data: dict[str, Any], m_ap: float | None) -> dict[str, Any]:
    """The ``privacy`` entry of one target: ``cross_domain`` and ``in_domain`` blocks (each with what ReID does
    not need: ``image_specific_gain``, ``background_gain``, ``person_gain``, ``probes``), the cross-domain
    attacker fields also at the top, and the in-domain ``probes`` at the top (the tables read both there)."""
    everyone = torch.ones(len(data["pids"]), dtype=torch.bool)
    out: dict[str, Any] = {"num_images": int(everyone.sum()), "num_queries": int(data["is_query"].sum())}
    if data["masks"] is None:
        log.info("region leak of %s not measured: %s", target.name, scoring.NO_MASKS)
    pictures = None
    probes_on = model.probes.get("enabled", True)
    if "cross" in model.splits:
        start = model._clock()
        res, pictures = scoring.score_suite(model, model.suites["cross"], data, everyone, m_ap)
        out.update(res)
        model._timed(f"cross/{target.name}/score", start)
        report.log_target(target.name, "cross-domain", res)
        out["cross_domain"] = {k: res.get(k) for k in SPLIT_KEYS}
        if probes_on:
            start = model._clock()
            feats, attrs = model.source_probe_data
            out["cross_domain"]["probes"] = {
                "split": "trained on the source's training images, scored on every image of this target",
                **probe(model, feats, attrs, data["feats"], data["attrs"]),
            }
            model._timed(f"probes/{target.name}", start)
    train, scored = scoring.identity_halves(data["pids"], model.split_seed)
    if "in_domain" in model.splits:
        if len(set(data["pids"][train].tolist())) < 2 or len(set(data["pids"][scored].tolist())) < 2:
            out["in_domain"] = None
            log.warning("in-domain audit of %s skipped: fewer than 4 identities", target.name)
        else:
            suite = suite_training.train_suite(
                model, f"in_domain/{target.name}", data["feats"][train], data["images"][train], model.in_domain_steps
            )
            model.curves[f"in_domain/{target.name}"] = suite["curves"]
            start = model._clock()
            res, recons = scoring.score_suite(model, suite, data, scored, m_ap)
            model._timed(f"in_domain/{target.name}/score", start)
            out["in_domain"] = {
                "num_train_images": int(train.sum()),
                "num_train_identities": len(set(data["pids"][train].tolist())),
                **res,
            }
            report.log_target(target.name, "in-domain", res)
            pictures = pictures or recons
    if probes_on:
        start = model._clock()
        if model.probes["split"] == "images":
            p_train, p_test = scoring.image_halves(len(data["pids"]), model.split_seed)
            how = "a seeded half of this target's images trains, the other half is scored"
        else:
            p_train, p_test = train, scored
            how = "held-out identities of this target (trained on the in-domain half)"
        rows = [torch.nonzero(m).flatten().tolist() for m in (p_train, p_test)]
        probes = probe(
            model,
            data["feats"][p_train],
            [data["attrs"][i] for i in rows[0]],
            data["feats"][p_test],
            [data["attrs"][i] for i in rows[1]],
        )
        out["probes"] = {"split": how, **probes}
        if out.get("in_domain"):
            out["in_domain"]["probes"] = out["probes"]
        model._timed(f"probes/{target.name}", start)
    if pictures is not None and model.trainer.is_global_zero and model.num_pictures > 0:
        real, recons, rows, masks = pictures
        report.save_reconstructions(
            Path(model.trainer.default_root_dir) / f"reconstructions_{target.name}.png",
            real,
            recons,
            data["pids"],
            rows[: model.num_pictures],
            model.trainer.loggers,
            key=f"privacy/reconstructions_{target.name}",
            masks=masks,
        )
    return out
