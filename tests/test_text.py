"""TextEncoder (frozen CLIP text tower fed token embeddings) and PromptComposer (placeholder words -> vectors)."""

import open_clip
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from ppreid.nn.backbones.clip_visual import OpenCLIPVisual
from ppreid.nn.prompts import PromptComposer
from ppreid.nn.text import TextEncoder
from ppreid.utils.errors import ConfigValueError

PROMPTS = [
    "A photo of a person.",
    "A photo of a woman in a red coat and blue jeans, walking past a shop window on a rainy day.",
    "x",
    "",
]
TOKENIZER = SimpleTokenizer()


def _tokens(texts: list[str]) -> torch.Tensor:
    return TOKENIZER(texts)


def _create(name: str) -> nn.Module:
    torch.manual_seed(0)
    return open_clip.create_model(name).eval()


@pytest.fixture(scope="module", params=["ViT-B-16", "RN50", "clip-tiny"])
def clip_model(request):
    return _create(request.param)


@pytest.fixture(scope="module")
def tiny():
    return _create("clip-tiny")


def test_encoder_equals_encode_text(clip_model):
    enc = TextEncoder(clip_model)
    ids = _tokens(PROMPTS)
    with torch.no_grad():
        expected = clip_model.encode_text(ids)
        for rows in (slice(0, 4), slice(1, 2), slice(2, 4)):  # batch sizes 4, 1, 2
            got = enc(enc.embed(ids[rows]), ids[rows])
            assert got.shape == expected[rows].shape
            assert torch.allclose(got, expected[rows], atol=1e-5, rtol=0)
    assert enc.width == clip_model.token_embedding.embedding_dim
    assert enc.output_dim == clip_model.text_projection.shape[1] and enc.context_length == 77


def test_backbone_text_tower_is_the_models_text_encoder(tmp_path, tiny):
    torch.save(tiny.state_dict(), tmp_path / "clip_tiny.pt")
    backbone = OpenCLIPVisual("clip-tiny", pretrained=str(tmp_path / "clip_tiny.pt"), image_size=(128, 64))
    enc = TextEncoder(backbone.text_tower())
    ids = _tokens(PROMPTS)
    with torch.no_grad():
        assert torch.allclose(enc(enc.embed(ids), ids), tiny.encode_text(ids), atol=1e-5, rtol=0)


def test_tokens_after_end_of_text_change_nothing(tiny):
    """Causal mask: cutting the sequence after the last end-of-text token gives the same features."""
    enc = TextEncoder(tiny)
    ids = _tokens(PROMPTS[:2])
    length = int(ids.argmax(dim=-1).max()) + 1
    with torch.no_grad():
        full = enc(enc.embed(ids), ids)
        cut = enc(enc.embed(ids[:, :length]), ids[:, :length])
    assert enc.is_causal and torch.allclose(full, cut, atol=1e-5, rtol=0)


def test_gradients_reach_embeddings_only(tiny):
    enc = TextEncoder(tiny)
    ids = _tokens(PROMPTS[:2])
    emb = enc.embed(ids).detach().requires_grad_(True)
    enc(emb, ids).square().sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in enc.parameters())
    eot = ids.argmax(dim=-1)
    for row in range(2):
        assert emb.grad[row, : eot[row] + 1].abs().sum(dim=-1).gt(0).all()
        assert torch.equal(emb.grad[row, eot[row] + 1 :], torch.zeros_like(emb.grad[row, eot[row] + 1 :]))


def test_registered_under_text_encoder_frozen_and_always_eval(tiny):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 4)
            self.text_encoder = TextEncoder(tiny)

    model = Model()
    model.train()
    assert model.head.training and not any(m.training for m in model.text_encoder.modules())
    keys = model.state_dict().keys()
    text_keys = {f"text_encoder.{k}" for k, _ in tiny.state_dict().items() if not k.startswith(("visual.", "logit_"))}
    assert text_keys <= keys and "text_encoder.attn_mask" not in keys
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    # the text weights are shared with the given model, not copied
    assert model.text_encoder.token_embedding.weight is tiny.token_embedding.weight


def test_linear_projection_and_refused_pooling():
    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16}
    text = {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "proj_bias": True}
    model = open_clip.model.CLIP(embed_dim=24, vision_cfg=vision, text_cfg=text).eval()
    assert isinstance(model.text_projection, nn.Linear)
    enc = TextEncoder(model)
    ids = SimpleTokenizer(context_length=12)(["a photo", "a person in blue"])
    with torch.no_grad():
        assert torch.allclose(enc(enc.embed(ids), ids), model.encode_text(ids), atol=1e-5, rtol=0)
    assert enc.output_dim == 24

    last_pool = open_clip.model.CLIP(embed_dim=24, vision_cfg=vision, text_cfg={**text, "pool_type": "last"})
    with pytest.raises(ConfigValueError, match="'last'"):
        TextEncoder(last_pool)
    with pytest.raises(ConfigValueError, match="no CLIP text transformer"):
        TextEncoder(nn.Linear(2, 2))


# ---- PromptComposer ------------------------------------------------------------------------------------------

CONTENT = "A photo of a X X X X person."
STYLE = "A photo in S S style."
COMPOSED = "A S S style photo of a X X X X person."


def test_placeholder_positions_and_counts():
    # tokens: <start> a photo of a x x x x person . <end>
    content = PromptComposer(CONTENT, placeholders=("X",))
    assert content.counts == {"X": 4} and content.positions("X").tolist() == [5, 6, 7, 8]
    assert content.token_ids.shape == (1, 77) and content.length == 12
    # tokens: <start> a s s style photo of a x x x x person . <end>
    composed = PromptComposer(COMPOSED, placeholders=("X", "S"))
    assert composed.counts == {"X": 4, "S": 2}
    assert composed.positions("S").tolist() == [2, 3] and composed.positions("X").tolist() == [8, 9, 10, 11]
    assert "token_ids" not in composed.state_dict()  # rebuilt from the config, never stale in a checkpoint


def test_rows_replaced_exactly_and_others_are_token_embeddings(tiny):
    enc = TextEncoder(tiny)
    composer = PromptComposer(COMPOSED, placeholders=("X", "S"))
    x, s = torch.randn(3, 4, enc.width), torch.randn(3, 2, enc.width)
    emb, ids = composer.compose(enc, X=x, S=s)
    assert emb.shape == (3, composer.length, enc.width) and ids.shape == (1, composer.length)
    assert torch.equal(emb[:, [8, 9, 10, 11]], x) and torch.equal(emb[:, [2, 3]], s)
    other = [i for i in range(composer.length) if i not in (2, 3, 8, 9, 10, 11)]
    template = enc.embed(composer.token_ids[:, : composer.length])
    assert torch.equal(emb[:, other], template[:, other].expand(3, -1, -1))


def test_real_word_vectors_give_encode_text(clip_model):
    """Placeholders filled with the embeddings of real words = the encoder on the sentence with those words."""
    enc = TextEncoder(clip_model)
    composer = PromptComposer("A S photo of a X X person.", placeholders=("X", "S"))
    words = _tokens(["red shirt", "sunny"])  # one token per word: <start> red shirt <end>, <start> sunny <end>
    x = enc.embed(words[0:1, 1:3])
    s = enc.embed(words[1:2, 1:2])
    with torch.no_grad():
        got = composer(enc, X=x, S=s)
        expected = clip_model.encode_text(_tokens(["A sunny photo of a red shirt person."]))
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_gradient_only_to_vectors_and_shared_set_broadcast(tiny):
    enc = TextEncoder(tiny)
    composer = PromptComposer(COMPOSED, placeholders=("X", "S"))
    x = torch.randn(3, 4, enc.width, requires_grad=True)
    s = torch.randn(2, enc.width, requires_grad=True)  # one style vector set shared by the batch
    feats = composer(enc, X=x, S=s)
    assert feats.shape == (3, enc.output_dim)
    feats.square().sum().backward()
    assert x.grad.abs().sum(dim=-1).gt(0).all() and s.grad.abs().sum(dim=-1).gt(0).all()
    assert all(p.grad is None for p in enc.parameters())
    with torch.no_grad():
        each = torch.cat([composer(enc, X=x[i : i + 1], S=s.unsqueeze(0)) for i in range(3)])
        assert torch.allclose(feats, each, atol=1e-5, rtol=0)
        copies = composer(enc, X=x[:1].expand(5, -1, -1), S=s)  # B copies of one prompt
        assert copies.shape == (5, enc.output_dim) and torch.allclose(copies, copies[:1].expand(5, -1), atol=1e-5)


def test_prompt_errors_name_template_and_counts(tiny):
    with pytest.raises(ConfigValueError) as err:
        PromptComposer(CONTENT, placeholders=("X", "S"))
    assert CONTENT in str(err.value) and "'S'" in str(err.value)
    with pytest.raises(ConfigValueError, match="is 4 tokens for CLIP"):
        PromptComposer("A photo of a QQQQQQQ person.", placeholders=("QQQQQQQ",))
    with pytest.raises(ConfigValueError, match="at most 77"):
        PromptComposer("a " * 80 + "X", placeholders=("X",))

    enc = TextEncoder(tiny)
    composer = PromptComposer(COMPOSED, placeholders=("X", "S"))
    with pytest.raises(ConfigValueError) as err:
        composer(enc, X=torch.randn(2, 3, enc.width), S=torch.randn(2, 2, enc.width))
    msg = str(err.value)
    assert COMPOSED in msg and "has 4 'X' placeholder words" in msg and "(2, 3, 128)" in msg
    with pytest.raises(ConfigValueError, match=r"vectors were given for \['X'\]"):
        composer(enc, X=torch.randn(2, 4, enc.width))
    with pytest.raises(ConfigValueError, match=r"given for \['S', 'X', 'Y'\]"):
        composer(enc, X=torch.randn(4, enc.width), S=torch.randn(2, enc.width), Y=torch.randn(1, enc.width))


def test_encode_prompts_in_one_pass_equals_one_call_per_prompt():
    import open_clip

    from ppreid.nn.prompts import PromptComposer, encode_prompts
    from ppreid.nn.text import TextEncoder

    torch.manual_seed(0)
    enc = TextEncoder(open_clip.create_model("clip-tiny"))
    content = PromptComposer("A photo of a X X X X person.", ("X",))
    style = PromptComposer("A photo in S S style.", ("S",))
    composed = PromptComposer("A S S style photo of a X X X X person.", ("X", "S"))
    x, s = torch.randn(3, 4, enc.width) * 0.02, torch.randn(3, 2, enc.width) * 0.02
    together = encode_prompts(enc, [(content, {"X": x}), (style, {"S": s}), (composed, {"X": x, "S": s})])
    alone = [content(enc, X=x), style(enc, S=s), composed(enc, X=x, S=s)]
    for a, b in zip(together, alone):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
