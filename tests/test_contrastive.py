"""Contrastive losses on hand-worked cases (expected values computed by hand with math.log / math.exp)."""

import math

import pytest
import torch

from ppreid.losses.contrastive import SupConLoss, i2t_cross_entropy, info_nce
from ppreid.utils.errors import ConfigValueError

E = math.e

# anchors a1 = [1, 0] (label 0), a2 = [0, 1] (label 1);
# contrast c1 = [1, 0] (label 0), c2 = [0, 2] (label 1), c3 = [1, 1] (label 0)
# raw dot products: a1 -> [1, 0, 1], a2 -> [0, 2, 1]
ANCHORS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
CONTRAST = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
A_LABELS = torch.tensor([0, 1])
C_LABELS = torch.tensor([0, 1, 0])


def test_supcon_by_hand_two_positives_for_one_anchor():
    # a1: positives c1, c3, both logit 1 -> mean log p = 1 - log(e + 1 + e)
    # a2: positive c2, logit 2          ->     log p = 2 - log(1 + e^2 + e)
    expected = -((1 - math.log(2 * E + 1)) + (2 - math.log(1 + E**2 + E))) / 2
    loss = SupConLoss()(ANCHORS, CONTRAST, A_LABELS, C_LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_supcon_temperature_and_normalize():
    # temperature 0.5 doubles the logits: a1 -> [2, 0, 2], a2 -> [0, 4, 2]
    expected = -((2 - math.log(2 * E**2 + 1)) + (4 - math.log(1 + E**4 + E**2))) / 2
    loss = SupConLoss(temperature=0.5)(ANCHORS, CONTRAST, A_LABELS, C_LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # normalized: c2 -> [0, 1], c3 -> [r, r], r = 1/sqrt(2): a1 -> [1, 0, r], a2 -> [0, 1, r]
    r = 1 / math.sqrt(2)
    z1, z2 = math.log(E + 1 + E**r), math.log(1 + E + E**r)
    expected = -(((1 - z1) + (r - z1)) / 2 + (1 - z2)) / 2
    loss = SupConLoss(normalize=True)(ANCHORS, CONTRAST, A_LABELS, C_LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_supcon_anchor_without_positive_is_left_out():
    anchors = torch.cat([ANCHORS, torch.tensor([[3.0, -1.0]])])
    loss = SupConLoss()(anchors, CONTRAST, torch.tensor([0, 1, 7]), C_LABELS)
    assert loss.item() == pytest.approx(SupConLoss()(ANCHORS, CONTRAST, A_LABELS, C_LABELS).item(), abs=1e-6)
    none = SupConLoss()(ANCHORS, CONTRAST, torch.tensor([5, 6]), C_LABELS)
    assert none.item() == 0.0


def test_supcon_gradient_by_hand():
    # d loss / d logits[i] = (softmax(logits[i]) - positives[i] / n_pos[i]) / B, and logits = A @ C.T
    anchors = ANCHORS.clone().requires_grad_(True)
    contrast = CONTRAST.clone().requires_grad_(True)
    SupConLoss()(anchors, contrast, A_LABELS, C_LABELS).backward()
    p1 = [E / (2 * E + 1), 1 / (2 * E + 1), E / (2 * E + 1)]
    p2 = [1 / (1 + E**2 + E), E**2 / (1 + E**2 + E), E / (1 + E**2 + E)]
    g = torch.tensor([[p1[0] - 0.5, p1[1], p1[2] - 0.5], [p2[0], p2[1] - 1, p2[2]]]) / 2
    assert torch.allclose(anchors.grad, g @ CONTRAST, atol=1e-6)
    assert torch.allclose(contrast.grad, g.t() @ ANCHORS, atol=1e-6)


def test_supcon_large_logits_stay_finite():
    # logits 1000 apart: a naive exp overflows; the loss is that of the float64 computation
    torch.manual_seed(0)
    feats, labels = torch.randn(6, 4) * 30, torch.tensor([0, 0, 1, 1, 2, 2])
    loss = SupConLoss()(feats, feats, labels, labels)
    exact = SupConLoss()(feats.double(), feats.double(), labels, labels)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(exact.item(), rel=1e-5)


def test_info_nce_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    # raw logits a @ b.T = [[2, 0], [1, 1]]
    # a->b: row 0 -> -log(e^2 / (e^2 + 1)) = log(1 + e^-2); row 1 -> -log(e / 2e) = log 2
    # b->a: logits.T = [[2, 1], [0, 1]]: row 0 -> log(1 + e^-1); row 1 -> -log(e / (1 + e)) = log(1 + e^-1)
    a2b = (math.log(1 + E**-2) + math.log(2)) / 2
    b2a = math.log(1 + E**-1)
    assert info_nce(a, b, temperature=1.0, normalize=False).item() == pytest.approx((a2b + b2a) / 2, abs=1e-6)
    # normalized, temperature 0.5: logits = 2 * I -> every row -log(e^2 / (e^2 + 1))
    assert info_nce(a, a, temperature=0.5).item() == pytest.approx(math.log(1 + E**-2), abs=1e-6)


def test_i2t_cross_entropy_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([2, 1])
    # logits: [1, 0, 1] (label 2) and [0, 2, 2] (label 1)
    z1, z2 = math.log(2 * E + 1), math.log(1 + 2 * E**2)
    lp1, lp2 = [1 - z1, -z1, 1 - z1], [-z2, 2 - z2, 2 - z2]
    plain = -(lp1[2] + lp2[1]) / 2
    assert i2t_cross_entropy(image, bank, labels).item() == pytest.approx(plain, abs=1e-6)
    eps = 0.3  # targets (1 - eps) * onehot + eps / 3
    smooth = -((1 - eps) * lp1[2] + eps / 3 * sum(lp1) + (1 - eps) * lp2[1] + eps / 3 * sum(lp2)) / 2
    assert i2t_cross_entropy(image, bank, labels, label_smoothing=eps).item() == pytest.approx(smooth, abs=1e-6)

    image = image.clone().requires_grad_(True)
    i2t_cross_entropy(image, bank, labels).backward()
    p1 = torch.tensor([E, 1, E]) / (2 * E + 1)
    p2 = torch.tensor([1, E**2, E**2]) / (1 + 2 * E**2)
    g = torch.stack([p1 - torch.tensor([0, 0, 1.0]), p2 - torch.tensor([0, 1.0, 0])]) / 2
    assert torch.allclose(image.grad, g @ bank, atol=1e-6)


def test_bad_values_are_clear_errors():
    with pytest.raises(ConfigValueError, match="temperature=0"):
        SupConLoss(temperature=0)
    with pytest.raises(ConfigValueError, match="temperature=-1"):
        info_nce(ANCHORS, ANCHORS, temperature=-1)
    with pytest.raises(ConfigValueError, match="label_smoothing=1.0"):
        i2t_cross_entropy(ANCHORS, CONTRAST, A_LABELS, label_smoothing=1.0)
    with pytest.raises(ValueError, match="widths 2 and 3"):
        SupConLoss()(ANCHORS, torch.zeros(2, 3), A_LABELS, A_LABELS)


# ----------------------------------------------------------------------------- PDM's decorrelation
def test_cross_correlation_penalty_by_hand():
    from ppreid.losses.decorrelation import cross_correlation_penalty

    # a: columns x = [1, 2, 3] and x' = [1, 0, -1]; b: one column y = [3, 1, 2].
    # centred: x -> [-1, 0, 1], x' -> [1, 0, -1], y -> [1, -1, 0]; every column has norm sqrt(2), so
    # r(x, y) = (-1 + 0 + 0) / 2 = -1/2 and r(x', y) = (1 + 0 + 0) / 2 = 1/2: mean r^2 = 1/4
    a = torch.tensor([[1.0, 1.0], [2.0, 0.0], [3.0, -1.0]])
    b = torch.tensor([[3.0], [1.0], [2.0]])
    assert float(cross_correlation_penalty(a, b)) == pytest.approx(0.25, abs=1e-5)
    assert float(cross_correlation_penalty(a[:, :1], a[:, :1])) == pytest.approx(1.0, abs=1e-5)  # r(x, x) = 1
    assert float(cross_correlation_penalty(a[:1], b[:1])) == 0.0  # one row: nothing varies
    with pytest.raises(ValueError, match="same images"):
        cross_correlation_penalty(a, b[:2])


def test_a_constant_offset_does_not_lower_the_centred_decorrelation():
    """The uncentred squared cosine of each image's content and style features is met by adding one large
    vector orthogonal to the content features to every style feature; the centred penalty does not move."""
    from ppreid.losses.decorrelation import cross_correlation_penalty

    content = torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [3.0, 2.0, 0.0]])
    style = content * 2 + torch.tensor([0.0, 0.0, 0.5])  # style follows content: fully correlated
    offset = torch.tensor([0.0, 0.0, 100.0])  # orthogonal to every content feature
    uncentred = lambda c, s: torch.nn.functional.cosine_similarity(c, s, dim=-1).pow(2).mean()
    assert float(uncentred(content, style + offset)) < 0.01 * float(uncentred(content, style))
    before = cross_correlation_penalty(content, style)
    after = cross_correlation_penalty(content, style + offset)
    # by hand: columns 1 and 2 of content and style correlate at +-1 or r(c1, c2); column 3 is constant
    # (zero after centring) and contributes 0; r(c1, c2) for [1, 2, 0, 3] and [0, 1, 1, 2]: centred
    # [-0.5, 0.5, -1.5, 1.5] and [-1, 0, 0, 1], r = 2 / (sqrt(5) sqrt(2)); mean over 9 entries of r^2:
    r = 2 / (5**0.5 * 2**0.5)
    expected = (1 + 1 + 2 * r**2) / 9
    assert float(before) == pytest.approx(expected, abs=1e-4)
    assert float(after) == pytest.approx(float(before), abs=1e-5)
