"""``model.defence=ridge``: a closed-form adversary, solved again on every batch, that E cannot out-train.

Why: a defence whose adversary is a trained decoder lets E win by moving its features where that one
decoder cannot follow, while the information stays for a decoder trained afresh (the audit's). Against a
decoder that is the *optimum* of its class on the current features, recomputed at every step, that
escape is closed: E can only lower its loss by making the information un-decodable by the whole class.
Our reading, not a published defence: the class here is kernel ridge regression with a linear kernel on
batch-standardized features (the linear-erasure line of INLP, Ravfogel et al. ACL 2020, and R-LACE, ICML
2022, applied to images), so it removes what a linear map reads; a deeper fresh attacker may still read
more, and the audit says how much.

Cross-fitting by identity: the batch's identities are split in two halves; the ridge fitted on one half
(``alpha = (K_aa + lambda I)^-1 (x_a - blind)``, ``K = z z^T / D``) predicts the other half's images
(``blind + K_ba alpha``) and vice versa. No identity is on both sides, so what the prediction gets right
is carried by features that are similar *across* people: the scene, the light, the pose of a photo, not
the garments that tell people apart. The solve is differentiable: E's gradient flows through the fit and
the prediction. ``lambda`` = ``ridge`` x the mean of K's diagonal (scale-free).

The reconstruction goes to ``PrivacyTerms`` (src/ppreid/privacy/defences.py) as a decoder's would:
``background`` (the SSIM gain inside the background), ``swap``, ``image``, each floored at 0 over the batch
(``privacy_loss``). Nothing is trained, so the defence has no optimizer, no adversary steps and no
pictures of its own.

Shapes: feat (B,D); real (B,3,h,w) in [0, 1]; pids (B,); blind (1,3,h,w); mask (B,1,h,w) or None.
"""

from __future__ import annotations

import torch

from ppreid.privacy.defences import Defence, PrivacyTerms, standardise
from ppreid.utils.errors import ConfigValueError


def identity_halves(pids: torch.Tensor) -> torch.Tensor:
    """(B,) identities -> bool (B,): True for the images of every other identity (in sorted order), so the
    two sides share no identity; all False when the batch holds a single identity."""
    ids = torch.unique(pids)
    return torch.isin(pids, ids[0::2]) if ids.numel() > 1 else torch.zeros_like(pids, dtype=torch.bool)


def cross_fitted_ridge(z: torch.Tensor, targets: torch.Tensor, side: torch.Tensor, ridge: float) -> torch.Tensor:
    """Kernel ridge predictions of ``targets`` (B,P) from ``z`` (B,D), each side predicted by the ridge fitted
    on the other (``side``: bool (B,)); zeros (the blind guess) where a side is empty."""
    pred = torch.zeros_like(targets)
    if bool(side.all()) or not bool(side.any()):
        return pred
    dim = z.shape[1]
    for fit, out in ((side, ~side), (~side, side)):
        gram = z[fit] @ z[fit].T / dim
        lam = ridge * gram.diagonal().mean().detach().clamp_min(1e-6)
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        alpha = torch.linalg.solve(gram + lam * eye, targets[fit])
        pred[out] = (z[out] @ z[fit].T / dim) @ alpha
    return pred


class RidgeDefence(Defence):
    """E against the cross-fitted kernel ridge reconstruction of its batch (module docstring)."""

    def __init__(
        self,
        ridge: float = 1.0,
        privacy_terms: dict | None = None,
        background_border: float = 0.25,
        privacy_loss: str = "ssim_gain",
        neg_pixel_kind: str = "l1",
    ) -> None:
        super().__init__()
        self.ridge = float(ridge)
        if not self.ridge > 0:
            raise ConfigValueError(
                f"model.ridge.ridge={ridge}: give a value > 0 (the ridge, a fraction of K's mean diagonal)."
            )
        self.terms = PrivacyTerms(privacy_terms, privacy_loss, neg_pixel_kind, background_border)

    def reconstruction(self, feat: torch.Tensor, real: torch.Tensor, pids: torch.Tensor, blind: torch.Tensor):
        """(B,D), (B,3,h,w), (B,), (1,3,h,w) -> the cross-fitted reconstruction (B,3,h,w) (not clamped: the
        gradient must not stop at 0 and 1)."""
        z = standardise(feat.float())
        residual = (real - blind).flatten(1).to(z)
        pred = cross_fitted_ridge(z, residual, identity_halves(pids), self.ridge)
        return blind + pred.view_as(real).to(real)

    def privacy_loss(self, feat, real, pids, blind, mask=None):
        """Each term floored at 0 over the batch (not per image): the ridge is the best linear decoder of
        this batch, so a term below 0 means it reads nothing, and pushing it lower would only reward E for
        features that mislead this one fit (anti-correlated, which is information too)."""
        recon = self.reconstruction(feat, real, pids, blind)
        _, terms = self.terms(recon, real, pids, blind, mask, keep_graph=True)
        loss = sum(
            (self.terms.weights[k.removeprefix("privacy_")] * v.clamp_min(0.0) for k, v in terms.items()),
            feat.sum() * 0.0,
        )
        return loss, {k: v.detach() for k, v in terms.items()}
