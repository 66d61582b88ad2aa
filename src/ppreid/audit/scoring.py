"""Scoring of the privacy audit (``model=attack``): which images an audit scores, and one suite of
attackers and their nulls scored on them (SSIM / PSNR, the gain over max(null, mean image), the swap test,
the person / background regions, leakage judged by the reference or by E, normalized, the strongest and
the most-leaking attacker, URR).

Every function is given tensors in dataset order (``target_data``); images are uint8 (N,3,h,w) at the
attack size, features float32 (N,D) on the CPU.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ppreid.data.masks import load_masks
from ppreid.metrics.privacy import (
    gain_over_baseline,
    normalized_leakage,
    psnr,
    random_rank1,
    region_ssim,
    ssim,
    swap_gain,
)
from ppreid.metrics.reid import evaluate_features

log = logging.getLogger("ppreid.audit.attack")

LEARNED = ("l1", "gan", "diffusion")  # the attackers the audit trains from scratch
REGIONS = ("person", "background")
NO_MASKS = "no person masks in this dataset's records (the procedural data write them; real datasets lack them)"


def target_data(target, store: dict[str, list[torch.Tensor]]) -> dict[str, Any]:
    """One target's collected tensors in dataset order (copies: outside inference mode they train), with
    the person masks (bool (N,1,h,w)) when every record names one (``masks`` None otherwise)."""
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
    mask_paths = [getattr(records[i], "mask", None) for i in index.tolist()]
    data["masks"] = load_masks(mask_paths, tuple(data["images"].shape[-2:])) if mask_paths and all(mask_paths) else None
    return data


def image_halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train mask, test mask) of a seeded half of ``n`` images (the probes' split of images)."""
    gen = torch.Generator().manual_seed(seed)
    train = torch.zeros(n, dtype=torch.bool)
    train[torch.randperm(n, generator=gen)[: n // 2]] = True
    return train, ~train


def swap_partners(pids: torch.Tensor, queries: torch.Tensor, members: torch.Tensor, seed: int) -> torch.Tensor:
    """For each scored image ``queries`` (Q,) (indices into ``pids`` (N,)), a seeded other image of the same
    identity among ``members`` (bool (N,)): its index, or -1 where the identity has no other image (Q,)."""
    gen = torch.Generator().manual_seed(seed + 2)
    out = torch.full((queries.numel(),), -1, dtype=torch.long)
    for row, i in enumerate(queries.tolist()):
        others = torch.nonzero(members & (pids == pids[i])).flatten()
        others = others[others != i]
        if others.numel():
            out[row] = others[int(torch.randint(others.numel(), (1,), generator=gen))]
    return out


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


def _nanmean(values: torch.Tensor) -> float | None:
    """Mean over the defined entries (NaN: an image whose region holds no SSIM window centre); None if none."""
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else None


def region_scores(recon, null_recon, mean_img, real, masks) -> dict[str, Any]:
    """SSIM inside the person and inside the background (``masks`` bool (B,1,h,w), True = person) of an
    attacker's reconstructions, its null's and the mean image's, and each region's gain over max(null, mean
    image) restricted to the region: ``person_ssim``, ``person_null_ssim``, ``person_mean_image_ssim``,
    ``person_gain`` (and the same for ``background``). Images (B,3,h,w) in [0, 1]."""
    out: dict[str, Any] = {}
    for region, inside in (("person", masks), ("background", ~masks)):
        score = _nanmean(region_ssim(recon, real, inside))
        null = _nanmean(region_ssim(null_recon, real, inside))
        mean = _nanmean(region_ssim(mean_img, real, inside))
        out.update(
            {
                f"{region}_ssim": score,
                f"{region}_null_ssim": null,
                f"{region}_mean_image_ssim": mean,
                f"{region}_gain": gain_over_baseline(score, null, mean),
            }
        )
    return out


def score_suite(audit, suite: dict[str, Any], data: dict[str, Any], members: torch.Tensor, m_ap: float | None):
    """Score every attacker of ``suite`` and its null on the scored images among ``members`` (bool mask),
    leakage against all real images of ``members``; ``audit`` is the AttackModel (its attackers' names,
    reconstruction and feature paths, metric and seeds). Returns (the fields, pictures (real, recons, rows, masks or None)).

    Per attacker: ``ssim_gain`` = SSIM - max(null SSIM, mean-image SSIM) on its scored images; the swap
    test ``image_specific_gain`` = mean SSIM(A(f_i), x_i) - SSIM(A(f_j), x_i), j another image of i's
    identity among ``members`` (images without one left out); with person masks, ``person_gain`` and
    ``background_gain`` (the gain inside each region). The split's values of these are the largest over
    the attackers (``strongest_by`` names which)."""
    gallery, queries = torch.nonzero(members).flatten(), scored_indices(members, audit.max_scored, audit.split_seed)
    rows_in_queries = torch.arange(queries.numel())
    real = data["images"][queries].float() / 255.0
    z_all = (data["feats"] - suite["feat_mean"]) / suite["feat_std"]
    z = z_all[queries]
    index = data["index"][queries]
    partners = swap_partners(data["pids"], queries, members, audit.split_seed)
    masks = data.get("masks")
    q_masks = None if masks is None else masks[queries]
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
    mean_img_ssim = ssim(mean_img, real)
    out: dict[str, Any] = {
        "num_scored": int(queries.numel()),
        "num_swap_pairs": int((partners >= 0).sum()),
        "pairs": suite["pairs"],
        "mean_image_ssim": float(mean_img_ssim.mean()),
        "mean_image_psnr": float(psnr(mean_img, real).mean()),
        "chance_r1": random_rank1(q_pid, g_pid, q_cam, g_cam),
        "leakage_judge": judge,
        "extractor_r1": rank1(data["feats"][queries], data["feats"][gallery], rows_in_queries),
        "attackers": {},
    }
    if q_masks is None:
        out["regions"] = NO_MASKS
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
        mean_sub = float(mean_img_ssim[sub].mean())
        row = {
            "ssim": float(ssim(recon, real[sub]).mean()),
            "psnr": float(psnr(recon, real[sub]).mean()),
            "null_ssim": float(ssim(null_recon, real[sub]).mean()),
            "null_psnr": float(psnr(null_recon, real[sub]).mean()),
            "mean_image_ssim": mean_sub,
            "num_scored": int(sub.numel()),
        }
        row["baseline_ssim"] = max(row["null_ssim"], mean_sub)
        row["ssim_gain"] = gain_over_baseline(row["ssim"], row["null_ssim"], mean_sub)
        row["gain_over_null"] = row["ssim"] - row["null_ssim"]
        paired = torch.nonzero(partners[sub] >= 0).flatten()
        row["image_specific_gain"] = None
        if paired.numel():
            j = partners[sub][paired]
            other = audit._reconstruct(attacker, z_all[j], data["index"][j])
            row["image_specific_gain"] = float(swap_gain(recon[paired], other, real[sub][paired]).mean())
        if q_masks is not None:
            row.update(region_scores(recon, null_recon, mean_img[sub], real[sub], q_masks[sub]))
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
    fresh = {a: r["ssim_gain"] for a, r in rows.items() if a in LEARNED}
    if "own" in rows and fresh:  # the defence's own decoder against the best decoder the audit trained fresh
        best = max(fresh, key=fresh.get)
        out["adversary_strength"] = {
            "own_gain": rows["own"]["ssim_gain"],
            "fresh_attacker": best,
            "fresh_gain": fresh[best],
            "ratio": rows["own"]["ssim_gain"] / fresh[best] if fresh[best] > 0 else None,
        }
    out["strongest"] = max(rows, key=lambda a: rows[a]["ssim_gain"])
    out["ssim_gain"] = rows[out["strongest"]]["ssim_gain"]
    out["strongest_by"] = {}
    for key in ("image_specific_gain", "person_gain", "background_gain"):
        defined = {a: r[key] for a, r in rows.items() if r.get(key) is not None}
        out["strongest_by"][key] = max(defined, key=defined.get) if defined else None
        out[key] = defined[out["strongest_by"][key]] if defined else None
    best = rows[out["strongest"]]["ssim"]
    out["urr"] = m_ap / best if (m_ap is not None and best > 0) else None
    leaking = {a: r["leakage_norm"] for a, r in rows.items() if r["leakage_norm"] is not None}
    out["most_leaking"] = max(leaking, key=leaking.get) if leaking else None
    out["leakage_norm"] = leaking.get(out["most_leaking"]) if leaking else None
    return out, (real, recons, rows_in_queries, q_masks)
