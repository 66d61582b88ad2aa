"""Linear attribute probes on stored features: what else than identity does a gallery feature tell?

A multinomial logistic regression (class-balanced cross-entropy, weight decay, full-batch Adam) is fitted
on standardized features of one set of identities and scored on another set's features by **balanced
accuracy** (the mean per-class recall over the classes present in the scored set), whose chance level is
1 / (number of those classes): a constant guess scores exactly that, whatever the class frequencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F


def balanced_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``target`` (both (N,) int64)."""
    recalls = [float((pred[target == c] == c).float().mean()) for c in target.unique().tolist()]
    return sum(recalls) / len(recalls)


def fit_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
) -> torch.nn.Linear:
    """Logistic regression (N,D) -> num_classes on standardized features, classes weighted by 1 / frequency."""
    gen = torch.Generator().manual_seed(0)
    probe = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        probe.weight.normal_(0.0, 0.01, generator=gen)
        probe.bias.zero_()
    counts = torch.bincount(train_y, minlength=num_classes).float()
    weight = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), counts)
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.inference_mode(False), torch.enable_grad():
        x, y = train_x.clone(), train_y.clone()
        for _ in range(int(steps)):
            loss = F.cross_entropy(probe(x), y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probe


def probe_attributes(
    train_feats: torch.Tensor,
    train_attrs: Sequence[Mapping[str, Any] | None],
    test_feats: torch.Tensor,
    test_attrs: Sequence[Mapping[str, Any] | None],
    groups: Mapping[str, Sequence[str]],
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
) -> dict[str, Any]:
    """One probe per attribute named in ``groups`` (group name -> attribute keys), fitted on the train
    features (N,D) with their attribute records and scored on the test ones. Per group: attribute ->
    {balanced_accuracy, chance, gain (= the two's difference), points (the gain in points above chance,
    100 x gain), classes}, and ``mean_gain`` / ``mean_points`` over the group;
    attributes missing from the records, or with fewer than 2 classes in either set, are listed in
    ``skipped`` with the reason."""
    mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-6)
    train_x, test_x = (train_feats - mean) / std, (test_feats - mean) / std
    out: dict[str, Any] = {"skipped": {}}
    for group, keys in groups.items():
        rows: dict[str, Any] = {}
        for key in keys:
            tr = [None if a is None else a.get(key) for a in train_attrs]
            te = [None if a is None else a.get(key) for a in test_attrs]
            if any(v is None for v in tr + te):
                out["skipped"][key] = "not in every image's attribute record"
                continue
            classes = sorted(set(tr))
            if len(classes) < 2 or len(set(te)) < 2:
                out["skipped"][key] = f"{len(classes)} value(s) in the probe's training set, {len(set(te))} scored"
                continue
            code = {c: i for i, c in enumerate(classes)}
            probe = fit_linear_probe(
                train_x, torch.tensor([code[v] for v in tr]), len(classes), steps, lr, weight_decay
            )
            with torch.no_grad():
                pred = probe(test_x).argmax(1)
            target = torch.tensor([code.get(v, -1) for v in te])  # -1: a value the probe never saw (recall 0)
            bacc = balanced_accuracy(pred, target)
            scored = len(set(te))
            rows[key] = {
                "balanced_accuracy": bacc,
                "chance": 1.0 / scored,
                "gain": bacc - 1.0 / scored,
                "points": 100.0 * (bacc - 1.0 / scored),
                "classes": scored,
            }
        gains: list[float] = [r["gain"] for r in rows.values()]
        mean = sum(gains) / len(gains) if gains else None
        out[group] = {**rows, "mean_gain": mean, "mean_points": None if mean is None else 100.0 * mean}
    return out
