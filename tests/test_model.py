"""The assembled model (encoders, joint space, similarity modes, temperature) and ``create_model``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import videovl
from videovl.config import MODEL_SIZES, ConfigError, ModelConfig
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.models.matching import frame_similarity, global_similarity, word_frame_similarity

SENTENCES = ["a digit moves left", "two", "the number seven falls slowly to the bottom"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> ModelConfig:
    cfg = videovl.model_config("test", **overrides)
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    return cfg


@pytest.fixture(scope="module")
def tokens():
    cfg = videovl.model_config("test")
    return load_tokenizer(cfg.text)(SENTENCES, padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = videovl.create_model(tiny_config(vision={"tubelet_size": 2})).eval()
    with torch.no_grad():  # a trained model's temporal branch is not zero: let it change the output
        for p in m.visual.temporal_parameters():
            p.normal_(0, 0.05)
    return m


# ------------------------------------------------------------------------------------------ encoders


@pytest.mark.parametrize("frames", [2, 4, 8, 12])
def test_encode_video_shapes(model, frames):
    with torch.no_grad():
        out = model.encode_video(torch.randn(3, 3, frames, 32, 32))
    assert out.clip.shape == (3, 32)
    assert out.frames.shape == (3, frames // 2, 32)  # one per tubelet of 2 frames
    assert out.tokens.shape == (3, 1 + frames // 2 * 16, 32)  # class token + 4x4 patches per tubelet
    assert torch.isfinite(out.tokens).all()


def test_images_and_one_frame_clips_are_the_same_input(model):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image = model.encode_video(images)
        clip = model.encode_video(images[:, :, None])  # (B, C, 1, H, W), as the data layer delivers
        repeated = model.encode_video(images[:, :, None].expand(-1, -1, 2, -1, -1))  # one tubelet
    assert image.clip.shape == (2, 32) and image.frames.shape == (2, 1, 32)
    assert image.tokens.shape == (2, 1 + 16, 32)
    for a, b, c in zip(image, clip, repeated):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c)


def test_the_small_size_reads_64_px_frames_one_per_position_and_their_differences():
    """configs/demo.yaml's tower: one frame per temporal position, a 4x4 grid of 16 px patches, no class
    token, each frame beside its difference from the one before (a still clip's is zero)."""
    torch.manual_seed(0)
    cfg = videovl.model_config("small", text=MODEL_SIZES["test"]["text"], clip_pool="ordered")
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    m = videovl.create_model(cfg).eval()
    assert m.visual.patch_embed.proj.weight.shape[1] == 6  # RGB and its frame difference
    clip = torch.rand(2, 3, 8, 64, 64)
    with torch.no_grad():
        out = m.encode_video(clip)
        still = m.encode_video(clip[:, :, :1].expand(-1, -1, 8, -1, -1))
        image = m.encode_video(clip[:, :, 0])
    assert out.clip.shape == (2, 128) and out.frames.shape == (2, 8, 128)
    assert out.tokens.shape == (2, 8 * 16, 128)  # 16 patches a frame, no class token
    torch.testing.assert_close(still.clip, image.clip, rtol=1e-4, atol=1e-5)  # a still clip is its image
    assert not torch.allclose(out.clip, still.clip, atol=1e-3)


def test_frame_count_not_divisible_by_tubelet_names_both(model):
    with pytest.raises(ValueError, match=r"3.*2|2.*3"):
        model.encode_video(torch.randn(1, 3, 3, 32, 32))


def test_encode_text_shapes(model, tokens):
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        out = model.encode_text(ids, mask)
    b, length = ids.shape
    assert out.sentence.shape == (b, 32) and out.words.shape == (b, length, 32)
    assert out.hidden.shape == (b, length, model.text.width) and torch.equal(out.mask, mask)


def test_outputs_are_normalised_unless_asked_not_to(model, tokens):
    video, ids, mask = torch.randn(2, 3, 4, 32, 32), tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        out = model(video, ids, mask)
        v, t = out.video_features, out.text_features
        raw_v = model.encode_video(video, normalize=False)
        raw_t = model.encode_text(ids, mask, normalize=False)
    ones = lambda x: torch.testing.assert_close(x.norm(dim=-1), torch.ones(x.shape[:-1]))  # noqa: E731
    for x in (v.clip, v.frames, t.sentence, t.words):
        ones(x)
    assert not torch.allclose(raw_v.clip.norm(dim=-1), torch.ones(2))
    for a, b in ((v.clip, raw_v.clip), (v.frames, raw_v.frames), (t.sentence, raw_t.sentence)):
        torch.testing.assert_close(a, F.normalize(b, dim=-1))
    torch.testing.assert_close(v.tokens, raw_v.tokens)  # the visual tokens are the encoder's own
    torch.testing.assert_close(t.hidden, raw_t.hidden)


def test_each_sample_is_encoded_independently_of_its_batch(model, tokens):
    """Padding and batch neighbours change nothing: a sample alone gives the same embeddings."""
    videos, ids, mask = torch.randn(3, 3, 4, 32, 32), tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        out = model(videos, ids, mask)
        v, t = out.video_features, out.text_features
        for i in range(3):
            n = int(mask[i].sum())
            alone_t = model.encode_text(ids[i : i + 1, :n], mask[i : i + 1, :n])
            torch.testing.assert_close(alone_t.sentence[0], t.sentence[i], atol=1e-5, rtol=1e-5)
            alone_v = model.encode_video(videos[i : i + 1])
            torch.testing.assert_close(alone_v.frames[0], v.frames[i], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ matching


@pytest.mark.parametrize("agg", ["softmax", "mean", "max"])
def test_similarity_modes(agg, tokens):
    torch.manual_seed(0)
    m = videovl.create_model(tiny_config(frame_agg=agg, frame_agg_temperature=0.3)).eval()
    with torch.no_grad():
        v = m.encode_video(torch.randn(4, 3, 4, 32, 32))
        t = m.encode_text(tokens["input_ids"], tokens["attention_mask"])
        sims = {mode: m.similarity(t, v, mode) for mode in ("global", "frame", "word")}
    for mode, s in sims.items():
        assert s.shape == (3, 4), mode
        assert (s.abs() <= 1 + 1e-5).all(), mode  # cosine-like, no temperature
    torch.testing.assert_close(sims["global"], global_similarity(t.sentence, v.clip))
    torch.testing.assert_close(sims["frame"], frame_similarity(t.sentence, v.frames, agg, 0.3))
    torch.testing.assert_close(sims["word"], word_frame_similarity(t.words, t.mask, v.frames, agg, 0.3))
    per_frame = torch.einsum("nd,mtd->nmt", t.sentence, v.frames)
    expected = {"mean": per_frame.mean(-1), "max": per_frame.amax(-1)}.get(agg)
    if expected is not None:
        torch.testing.assert_close(sims["frame"], expected)
    with pytest.raises(ValueError, match="'pairs'"):
        m.similarity(t, v, "pairs")


def test_logit_scale_starts_at_the_init_temperature_and_is_clamped():
    m = videovl.create_model(tiny_config(init_temperature=0.05, max_logit_scale=50.0))
    assert m.scale().item() == pytest.approx(20.0, rel=1e-5)
    m.scale().backward()
    assert m.logit_scale.grad.item() == pytest.approx(20.0, rel=1e-5)  # d exp(s) / ds
    with torch.no_grad():
        m.logit_scale.fill_(math.log(500.0))
    m.logit_scale.grad = None
    scale = m.scale()
    assert scale.item() == pytest.approx(50.0)
    scale.backward()
    assert m.logit_scale.grad.item() == 0.0  # past the clamp the temperature stops moving


def test_no_weight_decay_names_exist_and_include_the_temperature(model):
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= params.keys()
    assert {"logit_scale", "visual.pos_embed", "visual.temporal_embed", "visual.cls_token"} <= names
    assert "caption.pos_embed" in names  # the heads' own declarations are included
    assert "visual_proj.weight" not in names and "text_proj.weight" not in names


def test_grad_checkpointing_flags_from_config_reach_both_towers():
    on = {"grad_checkpointing": True}
    m = videovl.create_model(tiny_config(vision=on, text=on))
    assert m.visual.grad_checkpointing
    assert all(layer.gradient_checkpointing for layer in m.text.model.encoder.layer)
    m.set_grad_checkpointing(False)
    assert not m.visual.grad_checkpointing
    assert not any(layer.gradient_checkpointing for layer in m.text.model.encoder.layer)


# ------------------------------------------------------------------------------------------- factory


def test_create_model_from_name_dict_and_config():
    by_name = videovl.create_model(tiny_config())
    assert by_name.cfg.name == "test" and by_name.cfg.embed_dim == 32
    assert by_name.alignment is not None and by_name.caption is not None and by_name.action_head is None
    cfg = videovl.model_config({"name": "test", "vision": {"depth": 1}})
    assert cfg.vision.depth == 1 and cfg.vision.width == 32 and cfg.vision.patch_size == 8  # deep merge
    assert videovl.model_config(cfg) == cfg
    again = videovl.model_config(cfg, embed_dim=16)
    assert again.embed_dim == 16 and again.vision.depth == 1


def test_create_model_overrides_are_nested_and_do_not_leak_into_the_sizes():
    sizes = copy.deepcopy(MODEL_SIZES)
    m = videovl.create_model(
        "test",
        vision={"depth": 1, "attention": "joint"},
        text={"config": {"num_hidden_layers": 1}},
        caption={"enabled": False},
        alignment={"enabled": False},
        num_classes=5,
    )
    assert len(m.visual.blocks) == 1 and m.visual.cfg.attention == "joint" and m.visual.width == 32
    assert m.text.model.config.num_hidden_layers == 1 and m.text.width == 32  # other BERT keys kept
    assert m.caption is None and m.alignment is None
    assert m.action_head is not None and m.action_head.fc.out_features == 5
    assert sizes == MODEL_SIZES
    assert videovl.model_config("test").text.config["num_hidden_layers"] == 2


def test_a_size_name_is_expanded_once_on_the_way_from_a_config_file_to_a_model(monkeypatch):
    import videovl.config.sizes as sizes

    class Counting(dict):
        reads = 0

        def __getitem__(self, name):
            Counting.reads += 1
            return super().__getitem__(name)

    monkeypatch.setattr(sizes, "MODEL_SIZES", Counting(MODEL_SIZES))
    cfg = videovl.load_config(None, ["model.name=test", "model.caption.enabled=false"])
    model = videovl.create_model(videovl.model_config(cfg.model))  # the loop's path to its model
    assert Counting.reads == 1 and model.cfg == cfg.model
    # A resolved config is taken as it is: the size's text.config keys are not merged back into it.
    cfg.model.text.config = {k: v for k, v in cfg.model.text.config.items() if k != "intermediate_size"}
    again = videovl.model_config(cfg.model)
    assert again == cfg.model and again is not cfg.model and "intermediate_size" not in again.text.config
    assert videovl.model_config(cfg.model, embed_dim=16).text.config == cfg.model.text.config


def test_unknown_size_or_key_is_a_clear_error():
    with pytest.raises(ConfigError, match="'resnet50'.*demo, small, test, vit-b16"):
        videovl.create_model("resnet50")
    with pytest.raises(ConfigError, match="'tset'.*Did you mean 'test'"):
        videovl.model_config({"name": "tset"})
    with pytest.raises(ConfigError, match="embed_dims.*Did you mean 'embed_dim'"):
        videovl.model_config("test", embed_dims=8)
    with pytest.raises(ConfigError, match="frame_agg.*'median'"):
        videovl.create_model("test", frame_agg="median", caption={"enabled": False})


def test_caption_head_takes_the_tokenizer_ids_from_the_config_or_the_tokenizer():
    m = videovl.create_model("test", caption={"enabled": False})  # no tokenizer needed then
    assert m.caption is None
    vocab = load_tokenizer(m.cfg.text)
    assert videovl.create_model(tiny_config()).caption.lm_head.out_features == len(vocab)
    assert videovl.create_model("test").caption.lm_head.out_features == len(vocab)  # read from the tokenizer
    with pytest.raises(ConfigError, match="tokenizer is required"):
        videovl.create_model("test", text={"tokenizer": None})


def test_match_logits_fuse_the_joint_space_and_train_the_projections(tokens):
    torch.manual_seed(0)
    model = videovl.create_model(tiny_config())
    video = model.encode_video(torch.randn(3, 3, 4, 32, 32))
    text = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
    logits = model.match_logits(text.hidden, text.mask, video.tokens)
    assert logits.shape == (3, 2)
    assert torch.equal(model.match_score(text.hidden, text.mask, video.tokens), logits[:, 1] - logits[:, 0])
    logits[:, 1].sum().backward()
    for part in (model.text_proj, model.visual_proj, model.alignment, model.visual.patch_embed):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.ndim > 1)
    no_head = videovl.create_model(tiny_config(alignment={"enabled": False}))
    with pytest.raises(ConfigError, match="no alignment decoder"):
        no_head.match_logits(text.hidden, text.mask, video.tokens)
