"""Backbones: output shapes, configs, opt-in pretrained loading and positional-embedding resizing."""

import argparse
import logging
from pathlib import Path

import open_clip
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from open_clip.transformer import QuickGELU

from ppreid.nn.backbones.clip_visual import OpenCLIPVisual, resize_grid_pos_embed
from ppreid.nn.backbones.pretrained import load_pretrained
from ppreid.nn.backbones.resnet import ResNet50
from ppreid.nn.backbones.tiny_cnn import TinyCNN
from ppreid.utils.errors import ConfigValueError, find_input_error

CONF = Path(__file__).resolve().parents[1] / "conf" / "backbone"


def _backbone_yaml(name: str):
    """A backbone option's own keys, as instantiate sees them after composing: without its defaults list
    (the schema) and without clip_tiny's ``sandbox`` build parameters (the run takes them out)."""
    node = OmegaConf.load(CONF / f"{name}.yaml")
    for key in ("defaults", "sandbox"):
        node.pop(key, None)
    if node.get("pretrained") == "sandbox":  # the run resolves it to a built file; random weights here
        node.pretrained = None
    return node


@pytest.mark.parametrize(
    "name, input_shape, output_shape",
    [
        ("tiny_cnn", (2, 3, 64, 32), (2, 256, 4, 2)),
        ("resnet50", (2, 3, 64, 32), (2, 2048, 4, 2)),  # last_stride 1: H/16
        ("clip_vit_b16", (1, 3, 256, 128), (1, 512)),
        ("clip_rn50", (1, 3, 256, 128), (1, 1024)),
        ("clip_tiny", (2, 3, 256, 128), (2, 128)),
    ],
)
def test_backbone_configs_instantiate_and_forward(name, input_shape, output_shape):
    torch.manual_seed(0)
    # the CLIP configs take their input size from the data config: ${data.height} x ${data.width}
    cfg = OmegaConf.create({"data": {"height": 256, "width": 128}, "backbone": _backbone_yaml(name)})
    model = instantiate(cfg.backbone).eval()
    assert model.out_dim == output_shape[1]
    with torch.no_grad():
        out = model(torch.randn(*input_shape))
    assert out.shape == output_shape and torch.isfinite(out).all()


def test_tiny_cnn_shapes_and_backward():
    x = torch.randn(4, 3, 128, 64)
    assert TinyCNN()(x).shape == (4, 256, 8, 4)
    assert TinyCNN(last_stride=1)(x).shape == (4, 256, 16, 8)
    net = TinyCNN(channels=(8, 16, 32), out_dim=48, blocks_per_stage=2)
    out = net(x)
    assert net.out_dim == 48 and out.shape == (4, 48, 16, 8)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_resnet50_last_stride_2():
    assert ResNet50(last_stride=2).eval()(torch.randn(1, 3, 64, 32)).shape == (1, 2048, 2, 1)
    with pytest.raises(ConfigValueError, match="last_stride"):
        ResNet50(last_stride=3)


def test_resnet50_loads_torchvision_state_dict_with_fc(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    state = resnet50(weights=None).state_dict()  # includes fc.weight / fc.bias
    torch.save(state, tmp_path / "r50.pth")
    model = ResNet50(pretrained=str(tmp_path / "r50.pth"))
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])


def test_no_pretrained_logs_exactly_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="ppreid.nn"):
        TinyCNN(pretrained=None)
    lines = [r.getMessage() for r in caplog.records if r.name == "ppreid.nn"]
    assert lines == ["backbone tiny_cnn: no pretrained weights given (pretrained=null), starting from random init"]


def test_bad_path_names_value_and_accepted_values(tmp_path):
    bad = str(tmp_path / "missing" / "weights.pt")
    with pytest.raises(ConfigValueError) as err:
        TinyCNN(pretrained=bad)
    assert bad in str(err.value) and "Accepted" in str(err.value) and "null" in str(err.value)
    with pytest.raises(ConfigValueError, match="'imagenet'"):
        ResNet50(pretrained="imagenet21k")


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    small = tmp_path / "small.pt"
    torch.save(TinyCNN(channels=(8, 16)).state_dict(), small)
    with pytest.raises(ConfigValueError) as err:
        TinyCNN(pretrained=str(small))
    msg = str(err.value)
    assert str(small) in msg and "missing keys" in msg and "wrong shapes" in msg and "pretrained: null" in msg

    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(ConfigValueError, match="notes.pt"):
        TinyCNN(pretrained=str(text))

    pickled = tmp_path / "object.pt"
    torch.save({"args": argparse.Namespace(lr=0.1)}, pickled)  # arbitrary objects: refused by weights_only loading
    with pytest.raises(ConfigValueError, match="weights-only"):
        TinyCNN(pretrained=str(pickled))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_archive_gets_conversion_hint(tmp_path):
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    with pytest.raises(ConfigValueError, match="TorchScript"):
        TinyCNN(pretrained=str(scripted))


def test_round_trip_through_wrapped_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = TinyCNN().eval()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    dst = TinyCNN(pretrained=str(tmp_path / "ckpt.pt")).eval()
    x = torch.randn(2, 3, 64, 32)
    assert torch.equal(src(x), dst(x))
    assert load_pretrained(dst, None, kind="tiny_cnn") is False

    from safetensors.torch import save_file

    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    assert load_pretrained(TinyCNN(), str(tmp_path / "w.safetensors"), kind="tiny_cnn") is True


def test_resize_grid_pos_embed_by_hand():
    # 2x2 grid [[0, 1], [2, 3]] -> 2x4 (bilinear, align_corners=False): columns sample x = (j+0.5)/2 - 0.5
    # = -0.25, 0.25, 0.75, 1.25 -> clamped 0, 0.25, 0.75, 1 of the way from left to right
    pos = torch.tensor([[9.0], [0.0], [1.0], [2.0], [3.0]])
    out = resize_grid_pos_embed(pos, (2, 4), mode="bilinear")
    assert out[0, 0] == 9.0
    assert torch.allclose(out[1:, 0], torch.tensor([0, 0.25, 0.75, 1, 2, 2.25, 2.75, 3.0]))
    with pytest.raises(ConfigValueError, match="square"):
        resize_grid_pos_embed(torch.zeros(7, 1), (2, 2))


def _patterned_pos(pos: torch.Tensor, side: int) -> torch.Tensor:
    """Channel 0 constant 0.7, channel 1 = column x, channel 2 = row y; other channels random."""
    pos = pos.clone()
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    pos[1:, 0] = 0.7
    pos[1:, 1] = xs.flatten().float()
    pos[1:, 2] = ys.flatten().float()
    return pos


def _check_resized_grid(pos: torch.Tensor, cls: torch.Tensor, old_side: int, new_grid: tuple[int, int]):
    h, w = new_grid
    assert pos.shape[0] == h * w + 1
    assert torch.equal(pos[0], cls)  # class / mean token copied exactly
    grid = pos[1:].reshape(h, w, -1)
    assert torch.allclose(grid[..., 0], torch.full((h, w), 0.7), atol=1e-6)
    # bilinear, align_corners=False: new index j samples old coordinate (j + 0.5) * old/new - 0.5, clamped
    # to [0, old-1]; for a 7 or 14 grid to width 4 or 8 that is 1.75 j + 0.375 (a linear function of j).
    x_expected = torch.tensor([1.75 * j + 0.375 for j in range(w)])
    assert torch.allclose(grid[..., 1], x_expected.expand(h, w), atol=1e-5)
    # rows: old/new = 7/8 (RN50, 7 -> 8) or 14/16 (ViT, 14 -> 16): 0.875 i - 0.0625, clamped to [0, old-1]
    y_expected = torch.tensor([min(max(0.875 * i - 0.0625, 0.0), old_side - 1) for i in range(h)])
    assert torch.allclose(grid[..., 2], y_expected[:, None].expand(h, w), atol=1e-5)


def _full_clip_state(model_name: str, seed: int = 0) -> dict:
    """State dict of a random-weight open_clip CLIP at its native 224x224 size: what a CLIP checkpoint holds."""
    torch.manual_seed(seed)
    return open_clip.create_model(model_name).state_dict()


def _split(state: dict) -> tuple[dict, dict]:
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    text = {k: v for k, v in state.items() if not k.startswith("visual.") and not k.startswith("logit_")}
    return visual, text


@pytest.fixture(scope="module")
def vit_b16_state():
    return _full_clip_state("ViT-B-16")


@pytest.fixture(scope="module")
def rn50_state():
    return _full_clip_state("RN50")


def _log_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ppreid.nn"]


def _assert_text_tower_equals(tower: OpenCLIPVisual, text_state: dict) -> None:
    loaded = tower.text_tower().state_dict()
    assert loaded.keys() == text_state.keys()
    assert all(torch.equal(loaded[k], text_state[k]) for k in text_state)


def test_vit_b16_both_towers_from_one_full_clip_file(tmp_path, vit_b16_state, caplog):
    full = dict(vit_b16_state)
    full["visual.positional_embedding"] = _patterned_pos(full["visual.positional_embedding"], 14)
    torch.save(full, tmp_path / "clip_vit_b16.pt")
    visual, text = _split(full)

    with caplog.at_level(logging.INFO, logger="ppreid.nn"):
        tower = OpenCLIPVisual("ViT-B-16", pretrained=str(tmp_path / "clip_vit_b16.pt"), image_size=(256, 128))
    assert any("text tower loaded from the same weights" in line for line in _log_lines(caplog))
    loaded = tower.visual.state_dict()
    _check_resized_grid(loaded["positional_embedding"], visual["positional_embedding"][0], 14, (16, 8))
    assert all(torch.equal(loaded[k], v) for k, v in visual.items() if k != "positional_embedding")
    _assert_text_tower_equals(tower, text)
    assert tower(torch.randn(1, 3, 256, 128)).shape == (1, 512)


def test_visual_only_file_leaves_text_tower_random_and_says_so(tmp_path, vit_b16_state, caplog):
    visual, text = _split(vit_b16_state)
    torch.save(visual, tmp_path / "vit_visual.pt")  # visual-only state dict
    with caplog.at_level(logging.INFO, logger="ppreid.nn"):
        tower = OpenCLIPVisual("ViT-B-16", pretrained=str(tmp_path / "vit_visual.pt"), image_size=(224, 224))
    assert torch.equal(tower.visual.state_dict()["conv1.weight"], visual["conv1.weight"])
    random_text = tower.text_tower().state_dict()
    assert not torch.equal(random_text["token_embedding.weight"], text["token_embedding.weight"])
    lines = [line for line in _log_lines(caplog) if "text tower" in line]
    assert lines == [
        f"backbone clip ViT-B-16: {tmp_path / 'vit_visual.pt'} holds image-tower weights only; "
        "the text tower stays at random init"
    ]


def test_rn50_attnpool_pos_embed_resized_from_full_clip_safetensors(tmp_path, rn50_state):
    from safetensors.torch import save_file

    full = dict(rn50_state)
    full["visual.attnpool.positional_embedding"] = _patterned_pos(full["visual.attnpool.positional_embedding"], 7)
    save_file(full, str(tmp_path / "clip_rn50.safetensors"))
    visual, text = _split(full)

    tower = OpenCLIPVisual("RN50", pretrained=str(tmp_path / "clip_rn50.safetensors"))
    loaded = tower.visual.state_dict()
    _check_resized_grid(loaded["attnpool.positional_embedding"], visual["attnpool.positional_embedding"][0], 7, (8, 4))
    assert torch.equal(loaded["layer4.2.conv3.weight"], visual["layer4.2.conv3.weight"])
    _assert_text_tower_equals(tower, text)


def test_clip_backbone_state_dict_has_no_text_tower():
    tower = OpenCLIPVisual("clip-tiny", image_size=(128, 64))
    assert {k.split(".")[0] for k in tower.state_dict()} == {"visual"}
    text_ids = {id(p) for p in tower.text_tower().parameters()}
    assert text_ids and text_ids.isdisjoint(id(p) for p in tower.parameters())
    assert "_text_tower" not in dict(tower.named_modules())
    assert tower.input_mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert tower.input_std == tuple(open_clip.OPENAI_DATASET_STD)
    assert len(tower.input_mean) == len(tower.input_std) == 3


def test_clip_tiny_file_round_trip_equals_open_clip(tmp_path):
    """A clip-tiny checkpoint written by open_clip loads into the backbone; at 224x224 it is open_clip's encoder."""
    assert "clip-tiny" in open_clip.list_models()
    torch.manual_seed(0)
    model = open_clip.create_model("clip-tiny").eval()
    torch.save(model.state_dict(), tmp_path / "clip_tiny.pt")
    tower = OpenCLIPVisual("clip-tiny", pretrained=str(tmp_path / "clip_tiny.pt"), image_size=(224, 224)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(tower(x), model.encode_image(x), atol=1e-6)
    _assert_text_tower_equals(tower, _split(model.state_dict())[1])


def test_clip_yaml_input_size_follows_data_config():
    cfg = OmegaConf.create({"data": {"height": 128, "width": 64}, "backbone": _backbone_yaml("clip_tiny")})
    tower = instantiate(cfg.backbone)
    assert tower.image_size == (128, 64) and tower.grid_size == (8, 4)
    assert tower(torch.randn(2, 3, 128, 64)).shape == (2, 128)
    cfg.data.height = 120
    with pytest.raises(Exception) as err:  # Hydra wraps it; the entry points print the ConfigValueError
        instantiate(cfg.backbone)
    assert "divisible by 16" in str(find_input_error(err.value))
    # RN50 with CLIP-ReID's last stride 1 down-samples 16x; CLIP's own (last_stride=2) 32x
    rn50 = OmegaConf.create({"data": {"height": 128, "width": 40}, "backbone": _backbone_yaml("clip_rn50")})
    with pytest.raises(Exception) as err:
        instantiate(rn50.backbone)
    assert "divisible by 16" in str(find_input_error(err.value))
    rn50.data.width = 48
    rn50.backbone.last_stride = 2
    with pytest.raises(Exception) as err:
        instantiate(rn50.backbone)
    assert "divisible by 32" in str(find_input_error(err.value))


def test_clip_tag_is_routed_without_download_and_sets_quick_gelu(monkeypatch, vit_b16_state):
    calls = []

    def fake_tag_state(self, tag):
        calls.append(tag)
        return vit_b16_state

    monkeypatch.setattr(OpenCLIPVisual, "_tag_state", fake_tag_state)
    tower = OpenCLIPVisual("ViT-B-16", pretrained="openai")
    assert calls == ["openai"] and tower.quick_gelu
    assert isinstance(tower.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(tower.text_tower().transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert tower.visual.positional_embedding.shape == (129, 768)
    _assert_text_tower_equals(tower, _split(vit_b16_state)[1])
    with pytest.raises(ConfigValueError, match="'openai'"):
        OpenCLIPVisual("ViT-B-16", pretrained="opena1")


@pytest.mark.parametrize("fails", ["download", "create_model"])
def test_clip_tag_offline_is_one_clear_message(monkeypatch, fails):
    def offline(*args, **kwargs):
        raise ConnectionError("[Errno 101] Network is unreachable")

    if fails == "download":  # open_clip catches this and raises RuntimeError("Failed to download weights ...")
        monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    else:
        monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ConfigValueError) as err:
        OpenCLIPVisual("RN50", pretrained="openai")
    msg = str(err.value)
    assert "\n" not in msg
    assert "RN50" in msg and "'openai'" in msg and "backbone.pretrained=/path/to/" in msg


def test_clip_bad_model_or_size():
    with pytest.raises(ConfigValueError, match="ViT-B-99"):
        OpenCLIPVisual("ViT-B-99")
    with pytest.raises(ConfigValueError, match="divisible by 16"):
        OpenCLIPVisual("ViT-B-16", image_size=(250, 128))


def test_the_private_open_clip_builders_give_the_public_models_towers():
    """clip_visual.py is the one place that builds towers with open_clip's private ``_build_vision_tower`` /
    ``_build_text_tower`` (a tower at the ReID input size without building the other one). They must give the
    parameters (names and shapes) of ``open_clip.create_model``'s own towers: an open_clip release that changes
    them fails here first."""
    import open_clip

    from ppreid.nn.backbones.clip_visual import OpenCLIPVisual

    public = open_clip.create_model("clip-tiny", pretrained=None)
    ours = OpenCLIPVisual("clip-tiny", pretrained=None, image_size=(224, 224))

    def shapes(module):
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    assert shapes(ours.visual) == shapes(public.visual)
    text_public = {k: v for k, v in shapes(public).items() if not k.startswith("visual.") and k != "logit_scale"}
    assert shapes(ours.text_tower()) == text_public
