"""Perception Encoder (PE-Core) checkpoints in (an open_clip state dict beside its model config) against
open_clip's own model: a tiny PE-Core built by open_clip's factory from a model config that names a tiny
timm ``vit_pe_core`` tower (PE-Core-T's recipe at test size: 2D rotary positions on a reference grid, the
MAP head over the class token in its own heads, the timm head as projection)."""

import json

import pytest
import timm
import torch
from timm.models import register_model
from tiny_checkpoints import perturb

import videovl
from videovl.config import ConfigError
from videovl.models.convert.pe import pe_vision_fields

VOCAB, CONTEXT = 100, 12


def vit_pe_core_videovl_test_patch8_32(pretrained: bool = False, **kwargs):
    """PE-Core-T's timm recipe at test size: 32 px in 4x4 patches of 8, width 32 in 2 heads, 2 blocks,
    rotary positions rescaled to a 3x3 reference grid, a MAP head in 4 heads."""
    from timm.models.eva import vit_pe_core_tiny_patch16_384

    size = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    size |= {"ref_feat_shape": (3, 3), "attn_pool_num_heads": 4}
    return vit_pe_core_tiny_patch16_384(pretrained=pretrained, **{**size, **kwargs})


if not timm.is_model(vit_pe_core_videovl_test_patch8_32.__name__):
    register_model(vit_pe_core_videovl_test_patch8_32)

MODEL_CFG = {
    "embed_dim": 24,
    "vision_cfg": {
        "image_size": 32,
        "timm_model_name": vit_pe_core_videovl_test_patch8_32.__name__,
        "timm_model_pretrained": False,
        "timm_pool": "map",
        "timm_proj": None,
    },
    "text_cfg": {"context_length": CONTEXT, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2},
    "custom_text": True,
}


@pytest.fixture(scope="module")
def pe_file(tmp_path_factory):
    """(open_clip's PE-Core model, the path of its state dict): a hub-style folder, open_clip_config.json
    beside the weights, built by open_clip's own factory."""
    import open_clip

    folder = tmp_path_factory.mktemp("pe_core")
    preprocess = {"mean": [0.5] * 3, "std": [0.5] * 3}  # PE's pixels
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": preprocess})
    )
    torch.manual_seed(0)
    reference = open_clip.create_model(f"local-dir:{folder}").eval()
    perturb(reference)
    path = folder / "open_clip_model.pt"
    torch.save(reference.state_dict(), path)
    return reference, path


def _batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.randint(1, VOCAB - 2, (3, CONTEXT), generator=g)
    for row, end in enumerate((4, 11, 7)):  # open_clip's tokenizer: end-of-text (the highest id), then 0
        ids[row, end], ids[row, end + 1 :] = VOCAB - 1, 0
    return images, ids, (ids != 0).long()


def _pe(path, **vision):
    return videovl.create_model({"name": "clip", "pretrained": str(path), "vision": vision}).eval()


@torch.no_grad()
def test_pe_core_state_dict_equals_open_clip(pe_file):
    reference, path = pe_file
    images, ids, mask = _batch()
    model = _pe(path)
    v = model.cfg.vision
    assert (v.rope, v.rope_grid, v.rope_offset, v.rope_axes) == ("2d", (3, 3), 1.0, "xy")
    assert (v.heads, v.map_heads, v.map_class_token, v.pre_norm, v.norm_eps) == (2, 4, True, True, 1e-5)
    assert model.cfg.visual_proj_bias and model.cfg.embed_dim == 24
    image = model.encode_video(images, normalize=False)
    text = model.encode_text(ids, mask, normalize=False).sentence
    torch.testing.assert_close(image.clip, reference.encode_image(images), rtol=0, atol=1e-5)
    torch.testing.assert_close(text, reference.encode_text(ids), rtol=0, atol=1e-5)
    out = model(images, ids, mask)
    logits = out.logit_scale * out.video_features.clip @ out.text_features.sentence.T
    expected = reference.logit_scale.exp() * (
        reference.encode_image(images, normalize=True) @ reference.encode_text(ids, normalize=True).T
    )
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    # an image is a one-frame clip: its frame feature is its feature (the MAP head sees the same tokens)
    torch.testing.assert_close(image.frames[:, 0], image.clip, rtol=0, atol=1e-6)
    names = {n for n, _ in model.named_parameters()}
    assert names - model.pretrained_params == {
        f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()
    }


@pytest.mark.parametrize("attention", ["divided", "joint"])
def test_pe_core_video_with_token_dropping_and_checkpointing(pe_file, attention):
    _, path = pe_file
    model = _pe(path, num_frames=4, attention=attention)
    videos = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        out = model.encode_video(videos)
        if attention == "divided":  # (joint: the class token's one key competes with T copies of each patch)
            # a video of one repeated frame starts as that frame: the temporal branch and embedding are zero
            still = model.encode_video(videos[:, :, :1].expand(-1, -1, 4, -1, -1)).frames[:, 1]
            image = model.encode_video(videos[:, :, 0]).clip
            torch.testing.assert_close(still, image, rtol=0, atol=1e-5)
    assert out.clip.shape == (2, 24) and out.frames.shape == (2, 4, 24)
    model.train()
    g = torch.Generator().manual_seed(1)
    dropped = model.encode_video(videos, mask_ratio=0.5, generator=g)
    assert dropped.tokens.shape == (2, 1 + 4 * 8, 32) and torch.isfinite(dropped.clip).all()
    dropped.clip.sum().backward()
    assert model.visual.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    # gradient checkpointing computes the same
    model.zero_grad()
    plain = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    model.visual.set_grad_checkpointing(True)
    again = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "heads", "grid", "offset", "class_token"),
    [
        ("vit_pe_core_tiny_patch16_384", 3, (24, 24), 1.0, True),
        ("vit_pe_core_small_patch16_384", 6, (24, 24), 1.0, True),
        ("vit_pe_core_base_patch16_224", 12, (14, 14), 1.0, True),
        ("vit_pe_core_large_patch14_336", 16, (24, 24), 1.0, True),
        ("vit_pe_core_gigantic_patch14_448", 16, (32, 32), 0.0, False),
    ],
)
def test_the_published_pe_core_towers_read_from_timm(name, heads, grid, offset, class_token):
    # as open_clip builds them (head as the projection, MAP pooling), on the meta device: no weights
    trunk = timm.create_model(name, pretrained=False, num_classes=1024, global_pool="map", device="meta")
    fields = pe_vision_fields(trunk, name)
    v = fields["vision"]
    assert (v["heads"], v["rope_grid"], v["rope_offset"], v["class_token"]) == (
        heads,
        grid,
        offset,
        class_token,
    )
    assert (v["map_heads"], v["rope_axes"], v["map_class_token"]) == (8, "xy", class_token)
    assert fields["embed_dim"] == 1024


def test_pe_core_without_its_model_config_is_an_error_naming_the_setting(pe_file, tmp_path):
    _, path = pe_file
    lone = tmp_path / "pe.pt"
    lone.write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match="pe.pt.*timm visual tower.*model.pretrained_config"):
        videovl.create_model({"name": "clip", "pretrained": str(lone)})
    config = tmp_path / "PE-Core-test.json"
    config.write_text(json.dumps({**MODEL_CFG, "text_cfg": {**MODEL_CFG["text_cfg"], "pool_type": "eos"}}))
    with pytest.raises(ConfigError, match="pool_type.*CLIPTextModel"):
        videovl.create_model({"name": "clip", "pretrained": str(lone), "pretrained_config": str(config)})


def test_pe_core_does_not_export_to_formats_without_rotary_positions(pe_file, tmp_path):
    from videovl.models.export import export_clip, export_timm

    model = _pe(pe_file[1])
    with pytest.raises(ConfigError, match="rope"):
        export_clip(model, tmp_path / "clip")
    with pytest.raises(ConfigError, match="rotary"):
        export_timm(model, tmp_path / "timm.safetensors")


def test_a_checkpoint_of_a_pe_core_model_rebuilds_it(pe_file, tmp_path):
    model = _pe(pe_file[1], num_frames=4)
    cfg = videovl.load_config(
        overrides=["model.name=clip", f"model.pretrained={pe_file[1]}", "model.vision.num_frames=4"]
    )
    videovl.save_checkpoint(model, cfg, tmp_path / "ckpt")
    again, _ = videovl.load_checkpoint(tmp_path / "ckpt")
    assert again.cfg.vision.rope_grid == (3, 3)
    videos = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval().encode_video(videos).clip, model.encode_video(videos).clip)


def test_a_pe_core_file_evaluates_with_its_own_pixel_normalisation(pe_file):
    # load_checkpoint (tools' --checkpoint) reads the preprocess_cfg of the open_clip_config.json beside it
    model, cfg = videovl.load_checkpoint(pe_file[1])
    assert cfg.data.mean == (0.5, 0.5, 0.5) and cfg.data.std == (0.5, 0.5, 0.5)
    assert cfg.data.image_size == 32 and model.cfg.vision.rope == "2d"
    assert cfg.model.text.tokenizer is None  # none saved beside the weights


def test_a_clip_tokenizer_beside_a_pe_core_file_is_its_tokenizer(pe_file, tmp_path):
    from tiny_checkpoints import clip_tokenizer

    path = tmp_path / "pe.pt"
    path.write_bytes(pe_file[1].read_bytes())
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG}))
    clip_tokenizer().save_pretrained(tmp_path)
    cfg = videovl.model_config({"name": "clip", "pretrained": str(path)})
    assert cfg.text.tokenizer == str(tmp_path) and cfg.text.max_length == CONTEXT
