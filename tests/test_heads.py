"""BNNeck and global pooling."""

import pytest
import torch

from ppreid.nn.heads import BNNeck
from ppreid.nn.pooling import GeM, build_pooling
from ppreid.utils.errors import ConfigValueError


def test_bnneck_shapes_init_and_frozen_bias():
    torch.manual_seed(0)
    neck = BNNeck(16, num_classes=5)
    assert not neck.bn.bias.requires_grad and torch.equal(neck.bn.bias, torch.zeros(16))
    assert torch.equal(neck.bn.weight, torch.ones(16))
    assert neck.classifier.bias is None and neck.classifier.weight.shape == (5, 16)
    assert neck.classifier.weight.std().item() == pytest.approx(0.001, rel=0.2)

    feat = torch.randn(8, 16) * 3 + 2
    feat_bn, logits = neck(feat)
    assert feat_bn.shape == (8, 16) and logits.shape == (8, 5)
    # training-mode BN with weight 1, bias 0: per-dim zero mean, unit (biased) variance
    assert torch.allclose(feat_bn.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(feat_bn.var(0, unbiased=False), torch.ones(16), atol=1e-3)

    opt = torch.optim.SGD([p for p in neck.parameters() if p.requires_grad], lr=1.0)
    (logits.sum() + feat_bn.pow(3).sum()).backward()
    assert neck.bn.bias.grad is None and neck.bn.weight.grad is not None
    opt.step()
    assert torch.equal(neck.bn.bias, torch.zeros(16))


def test_bnneck_with_bias_when_asked():
    assert BNNeck(4, 3, bias_free_bn=False).bn.bias.requires_grad


def test_bnneck_classifier_set_later():
    neck = BNNeck(8, num_classes=0)
    assert neck.num_classes is None and neck.classifier is None
    feat_bn, logits = neck(torch.randn(4, 8))
    assert logits is None and feat_bn.shape == (4, 8)
    neck.reset_classifier(11)
    assert neck.num_classes == 11
    assert neck(torch.randn(4, 8))[1].shape == (4, 11)
    assert "classifier.weight" in neck.state_dict()


def test_gem_p1_equals_avg_and_large_p_approaches_max():
    torch.manual_seed(0)
    x = torch.rand(3, 5, 4, 2) + 0.1
    avg = build_pooling("avg")(x)
    assert torch.allclose(avg, x.mean(dim=(2, 3)))
    assert torch.allclose(GeM(p=1.0, learnable=False)(x), avg, atol=1e-6)
    assert torch.allclose(GeM(p=200.0, learnable=False)(x), build_pooling("max")(x), rtol=0.02)
    # hand case: values 1 and 3 at p=2 -> sqrt((1 + 9) / 2) = sqrt(5)
    two = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    assert GeM(p=2.0, learnable=False)(two).item() == pytest.approx(5**0.5, abs=1e-6)


def test_gem_learnable_p_gets_gradient():
    gem = build_pooling("gem", p=3.0, learnable=True)
    gem(torch.rand(2, 3, 4, 4) + 0.1).sum().backward()
    assert isinstance(gem.p, torch.nn.Parameter) and gem.p.grad is not None
    assert "p" not in dict(build_pooling("gem", learnable=False).named_parameters())


@pytest.mark.parametrize("name", ["avg", "max", "gem"])
def test_pooling_passes_vectors_through(name):
    v = torch.randn(4, 7)
    assert build_pooling(name)(v) is v
    assert build_pooling(name)(torch.rand(4, 7, 3, 2)).shape == (4, 7)


def test_unknown_pooling_names_choices():
    with pytest.raises(ConfigValueError, match="avg"):
        build_pooling("median")
