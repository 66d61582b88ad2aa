"""ReID losses on hand-worked cases (the expected values are computed by hand below, not by the code)."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ppreid.losses.classification import CrossEntropyLabelSmooth
from ppreid.losses.metric import TripletLoss
from ppreid.utils.errors import ConfigValueError

CONF = Path(__file__).resolve().parents[1] / "conf"


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# 1-D points x = [0, 3, 4, 6], ids [0, 0, 1, 1]. Pairwise |xi - xj|:
#   d(0,3)=3 d(0,4)=4 d(0,6)=6 d(3,4)=1 d(3,6)=3 d(4,6)=2
# anchor 0: hardest pos 3, hardest neg min(4,6)=4 -> d_ap - d_an = -1
# anchor 3: pos 3, neg min(1,3)=1 -> +2
# anchor 4: pos 2, neg min(4,1)=1 -> +1
# anchor 6: pos 2, neg min(6,3)=3 -> -1
FEATS_1D = torch.tensor([[0.0], [3.0], [4.0], [6.0]])
IDS = torch.tensor([0, 0, 1, 1])
DIFFS = [-1.0, 2.0, 1.0, -1.0]


def test_triplet_batch_hard_margin_by_hand():
    # relu(diff + 0.3) = [0, 2.3, 1.3, 0] -> mean 3.6 / 4 = 0.9
    loss = TripletLoss(margin=0.3)(FEATS_1D, IDS)
    assert loss.item() == pytest.approx(0.9, abs=1e-5)


def test_triplet_soft_margin_by_hand():
    # softplus(diff) = log(1 + e^diff): [log(1+e^-1), log(1+e^2), log(1+e^1), log(1+e^-1)]
    expected = (2 * softplus(-1.0) + softplus(2.0) + softplus(1.0)) / 4  # = 1.016678...
    loss = TripletLoss(margin=None)(FEATS_1D, IDS)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(1.0166785, abs=1e-6)


def test_triplet_normalized_2d_by_hand():
    # normalized: a=(1,0) b=(0,1) | c=(-1,0) d=(0,-1); neighbours at sqrt(2), opposites at 2.
    # every anchor: its positive is a neighbour (sqrt 2), its nearest negative is a neighbour (sqrt 2)
    # -> d_ap - d_an = 0 for all four -> relu(0 + 0.3) = 0.3
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, -5.0]])
    loss = TripletLoss(margin=0.3, normalize_feature=True)(feats, IDS)
    assert loss.item() == pytest.approx(0.3, abs=1e-5)
    # without normalisation: a=(2,0): pos b dist sqrt(13), negs c 3, d sqrt(29) -> sqrt(13)-3
    # b=(0,3): pos a sqrt(13), negs c sqrt(10), d 8 -> sqrt(13)-sqrt(10)
    # c=(-1,0): pos d sqrt(26), negs a 3, b sqrt(10) -> sqrt(26)-3
    # d=(0,-5): pos c sqrt(26), negs a sqrt(29), b 8 -> sqrt(26)-sqrt(29)  (negative: + 0.3 still > 0)
    s = math.sqrt
    diffs = [s(13) - 3, s(13) - s(10), s(26) - 3, s(26) - s(29)]
    expected = sum(max(0.0, d + 0.3) for d in diffs) / 4
    assert TripletLoss(margin=0.3)(feats, IDS).item() == pytest.approx(expected, abs=1e-5)


def test_triplet_gradients_flow_and_stay_finite_at_zero_distance():
    feats = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    loss = TripletLoss(margin=0.3)(feats, IDS)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0


def test_triplet_without_any_triplet_is_zero_with_graph():
    feats = torch.randn(3, 4, requires_grad=True)
    loss = TripletLoss()(feats, torch.tensor([0, 1, 2]))  # no anchor has a positive
    assert loss.item() == 0.0
    loss.backward()
    assert feats.grad is not None


def test_triplet_rejects_negative_margin():
    with pytest.raises(ConfigValueError, match="margin"):
        TripletLoss(margin=-1.0)


def test_label_smoothing_by_hand():
    # logits = log([1, 2, 1]) -> softmax p = [0.25, 0.5, 0.25]; target 1; eps = 0.3
    # q = 0.7 * onehot + 0.3 / 3 = [0.1, 0.8, 0.1]
    # loss = -(0.1 ln .25 + 0.8 ln .5 + 0.1 ln .25) = 0.2 * 2 ln2 + 0.8 ln2 = 1.2 ln 2
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0]]))
    loss = CrossEntropyLabelSmooth(epsilon=0.3)(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(1.2 * math.log(2), abs=1e-6)
    # target 0 in a second row: q = [0.8, 0.1, 0.1]
    # -> -(0.8 ln .25 + 0.1 ln .5 + 0.1 ln .25) = 1.6 ln2 + 0.1 ln2 + 0.2 ln2 = 1.9 ln2
    two = CrossEntropyLabelSmooth(epsilon=0.3)(logits.repeat(2, 1), torch.tensor([1, 0]))
    assert two.item() == pytest.approx((1.2 + 1.9) / 2 * math.log(2), abs=1e-6)


def test_label_smoothing_is_torchs_label_smoothing_with_the_gradient_by_hand():
    """Same definition as F.cross_entropy(label_smoothing=eps): eps spread over all C classes."""
    # the hand case above: p = [0.25, 0.5, 0.25], q = [0.1, 0.8, 0.1]; d loss / d logits = p - q
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0]])).requires_grad_()
    ours = CrossEntropyLabelSmooth(epsilon=0.3)(logits, torch.tensor([1]))
    (grad,) = torch.autograd.grad(ours, logits)
    assert grad.tolist()[0] == pytest.approx([0.15, -0.3, 0.15], abs=1e-6)
    torchs = F.cross_entropy(logits, torch.tensor([1]), label_smoothing=0.3)
    assert torchs.item() == pytest.approx(1.2 * math.log(2), abs=1e-6)
    # fp32, a batch of 751 classes (Market-1501's): equal values and gradients
    torch.manual_seed(0)
    logits = (3 * torch.randn(64, 751)).requires_grad_()
    targets = torch.randint(0, 751, (64,))
    ours = CrossEntropyLabelSmooth(epsilon=0.1)(logits, targets)
    torchs = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert ours.item() == pytest.approx(torchs.item(), abs=1e-6)
    assert torch.allclose(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(torchs, logits)[0], atol=1e-8)


def test_label_smoothing_eps0_is_cross_entropy_and_has_grad():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, requires_grad=True)
    targets = torch.tensor([0, 3, 6, 2, 2])
    loss = CrossEntropyLabelSmooth(epsilon=0.0)(logits, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, targets).item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_input_kinds():
    assert CrossEntropyLabelSmooth.input_kind == "logits"
    assert TripletLoss.input_kind == "features"


@pytest.mark.parametrize(
    "name, key, cls, attrs",
    [
        ("ce_ls", "ce_ls", CrossEntropyLabelSmooth, {"epsilon": 0.1}),
        ("triplet", "triplet", TripletLoss, {"margin": 0.3}),
        ("triplet_soft", "triplet_soft", TripletLoss, {"margin": None}),
    ],
)
def test_loss_configs_instantiate(name, key, cls, attrs):
    cfg = OmegaConf.load(CONF / "loss" / f"{name}.yaml")
    assert list(cfg.keys()) == [key] and cfg[key].weight == 1.0
    fn = instantiate(cfg[key].fn)
    assert isinstance(fn, cls)
    for attr, value in attrs.items():
        assert getattr(fn, attr) == value
