"""Scoring of the privacy audit (``model=attack``): which images an audit scores, and one suite of
attackers and their nulls scored on them (SSIM / PSNR, the gain over the null, leakage judged by the
reference or by E, normalized, the strongest and the most-leaking attacker, URR).

Every function is given tensors in dataset order (``target_data``); images are uint8 (N,3,h,w) at the
attack size, features float32 (N,D) on the CPU.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ppreid.metrics.privacy import normalized_leakage, psnr, random_rank1, ssim
from ppreid.metrics.reid import evaluate_features

log = logging.getLogger("ppreid.audit.attack")


def target_data(target, store: dict[str, list[torch.Tensor]]) -> dict[str, Any]:
    """One target's collected tensors in dataset order (copies: outside inference mode they train)."""
    index = torch.cat(store["index"])
    order = index.argsort()
    index = index[order].clone()
    records = target.records
    data = {
        "index": index,
        "feats": torch.cat(store["feats"])[order].clone(),
        "images": torch.cat(store["images"])[order].clone(),
        "pids": torch.tensor([records[i].pid for i in index.tolist()]),
        "camids": torch.tensor([records[i].camid for i in index.tolist()]),
        "attrs": [getattr(records[i], "attributes", None) for i in index.tolist()],
        "is_query": index < target.num_query,
    }
    data["ref"] = torch.cat(store["ref"])[order].clone() if "ref" in store else None
    return data


def identity_halves(pids: torch.Tensor, seed: int):
    """(train mask, scored mask) of the in-domain split: a seeded half of the identities trains."""
    ids = sorted(set(pids.tolist()))
    gen = torch.Generator().manual_seed(seed)
    first = {ids[i] for i in torch.randperm(len(ids), generator=gen)[: len(ids) // 2].tolist()}
    train = torch.tensor([p in first for p in pids.tolist()])
    return train, ~train


def scored_indices(members: torch.Tensor, max_scored: int | None, seed: int) -> torch.Tensor:
    """Indices of the scored images among ``members`` (bool mask): all, or ``max_scored`` of them
    drawn with ``seed + 1`` (the same images for every attacker and every audited model)."""
    idx = torch.nonzero(members).flatten()
    if max_scored is None or idx.numel() <= max_scored:
        return idx
    gen = torch.Generator().manual_seed(seed + 1)
    return idx[torch.randperm(idx.numel(), generator=gen)[:max_scored].sort().values]


def score_suite(audit, suite: dict[str, Any], data: dict[str, Any], members: torch.Tensor, m_ap: float | None):
    """Score every attacker of ``suite`` and its null on the scored images among ``members`` (bool mask),
    leakage against all real images of ``members``; ``audit`` is the AttackModel (its attackers' names,
    reconstruction and feature paths, metric and seeds). Returns (the fields, pictures (real, recons, rows))."""
    gallery, queries = torch.nonzero(members).flatten(), scored_indices(members, audit.max_scored, audit.split_seed)
    rows_in_queries = torch.arange(queries.numel())
    real = data["images"][queries].float() / 255.0
    z = (data["feats"][queries] - suite["feat_mean"]) / suite["feat_std"]
    index = data["index"][queries]
    q_pid, q_cam, g_pid, g_cam = (
        data["pids"][queries],
        data["camids"][queries],
        data["pids"][gallery],
        data["camids"][gallery],
    )

    def rank1(qf: torch.Tensor, gf: torch.Tensor, subset: torch.Tensor) -> float | None:
        """Rank-1 of queries ``subset`` against every member; None when no query has a cross-camera
        match among the members (a fast dev run's or a tiny split's few images)."""
        has_match = (
            (q_pid[subset].view(-1, 1) == g_pid.view(1, -1)) & (q_cam[subset].view(-1, 1) != g_cam.view(1, -1))
        ).any()
        if not bool(has_match):
            log.warning(
                "leakage: no scored image has a match from another camera among the %d images; rank-1 left undefined",
                g_pid.numel(),
            )
            return None
        res = evaluate_features(qf, gf, q_pid[subset], g_pid, q_cam[subset], g_cam, metric=audit.eval_metric)
        return float(res["cmc"][0])

    judge = "reference" if data["ref"] is not None else "extractor"
    judge_real = data["ref"] if data["ref"] is not None else data["feats"]
    mean_img = suite["mean_image"].expand_as(real)
    out: dict[str, Any] = {
        "num_scored": int(queries.numel()),
        "pairs": suite["pairs"],
        "mean_image_ssim": float(ssim(mean_img, real).mean()),
        "mean_image_psnr": float(psnr(mean_img, real).mean()),
        "chance_r1": random_rank1(q_pid, g_pid, q_cam, g_cam),
        "leakage_judge": judge,
        "extractor_r1": rank1(data["feats"][queries], data["feats"][gallery], rows_in_queries),
        "attackers": {},
    }
    judge_r1 = rank1(judge_real[queries], judge_real[gallery], rows_in_queries)
    if data["ref"] is not None:
        out["reference_r1"] = judge_r1
    recons = {}
    for name in audit.attacker_names:
        start = time.time()
        attacker, null = suite["attackers"][name], suite["nulls"][name]
        limit = getattr(attacker, "max_images", None)
        sub = rows_in_queries[:limit] if limit else rows_in_queries
        recon = audit._reconstruct(attacker, z[sub], index[sub])
        if null.needs_training:
            null_recon = audit._reconstruct(null, z[sub], index[sub])
        else:  # white-box null: invert another scored image's feature
            perm = torch.randperm(sub.numel(), generator=torch.Generator().manual_seed(audit.split_seed))
            null_recon = audit._reconstruct(null, z[sub][perm], index[sub])
        row = {
            "ssim": float(ssim(recon, real[sub]).mean()),
            "psnr": float(psnr(recon, real[sub]).mean()),
            "null_ssim": float(ssim(null_recon, real[sub]).mean()),
            "null_psnr": float(psnr(null_recon, real[sub]).mean()),
            "num_scored": int(sub.numel()),
        }
        row["ssim_gain"] = row["ssim"] - row["null_ssim"]
        row["leakage_r1"] = rank1(audit._features(recon), data["feats"][gallery], sub)
        if data["ref"] is not None:
            row["leakage_r1_ref"] = rank1(audit._features(recon, reference=True), data["ref"][gallery], sub)
        leak = row["leakage_r1_ref"] if data["ref"] is not None else row["leakage_r1"]
        chance = random_rank1(q_pid[sub], g_pid, q_cam[sub], g_cam)
        judge_sub = (
            judge_r1 if sub.numel() == queries.numel() else rank1(judge_real[queries][sub], judge_real[gallery], sub)
        )
        row["leakage_norm"] = normalized_leakage(leak, chance, judge_sub)
        row["train_time_s"] = suite["train_time_s"].get(name)
        row["reconstruct_time_s"] = round(time.time() - start, 2)
        out["attackers"][name] = row
        recons[name] = torch.cat([recon, real[recon.shape[0] :]]) if recon.shape[0] < real.shape[0] else recon
    rows = out["attackers"]
    out["strongest"] = max(rows, key=lambda a: rows[a]["ssim_gain"])
    out["ssim_gain"] = rows[out["strongest"]]["ssim_gain"]
    best = rows[out["strongest"]]["ssim"]
    out["urr"] = m_ap / best if (m_ap is not None and best > 0) else None
    leaking = {a: r["leakage_norm"] for a, r in rows.items() if r["leakage_norm"] is not None}
    out["most_leaking"] = max(leaking, key=leaking.get) if leaking else None
    out["leakage_norm"] = leaking.get(out["most_leaking"]) if leaking else None
    return out, (real, recons, rows_in_queries)
