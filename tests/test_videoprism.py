"""VideoPrism folders into the visual encoder: a factorised encoder (spatial layers, then temporal
layers over each spatial position) with capped attention logits; against transformers' own models."""

import dataclasses

import pytest
import torch
from einops import rearrange
from tiny_checkpoints import write_tiny_videoprism

import videovl
from videovl.config import ConfigError


def _model(folder, **vision):
    return videovl.create_model(
        {"name": "test", "vision": {"pretrained": str(folder), **vision}, "caption": {"enabled": False}}
    )


def _frames(x):
    return rearrange(x, "b c t h w -> b t c h w")


@pytest.mark.parametrize("kind", ["vision", "video", "classifier", "clip"])
@torch.no_grad()
def test_videoprism_folder_equals_transformers(tmp_path, kind):
    import transformers

    folder = write_tiny_videoprism(tmp_path / kind, kind)
    model = _model(folder)
    encoder = model.visual.eval()
    cfg = encoder.cfg
    assert (cfg.attention, cfg.depth, cfg.temporal_depth, cfg.attn_softcap, cfg.tubelet_size) == (
        "factorised", 2, 2, 50.0, 1,
    )  # fmt: skip
    name = {"vision": "VisionModel", "video": "VideoModel", "classifier": "ForVideoClassification",
            "clip": "ClipModel"}[kind]  # fmt: skip
    reference = getattr(transformers, f"VideoPrism{name}").from_pretrained(folder).eval()
    backbone = reference if kind == "vision" else getattr(reference, "vision_model", None)
    backbone = backbone if backbone is not None else reference.video_model.vision_model
    x = torch.randn(2, 3, 4, 16, 16)
    theirs = backbone(pixel_values_videos=_frames(x)).last_hidden_state  # (t, h, w) order, as ours
    ours = encoder(x)
    torch.testing.assert_close(ours.tokens, theirs, rtol=0, atol=1e-5)
    print(f"videoprism {kind} tokens max diff", (ours.tokens - theirs).abs().max().item())
    frames = rearrange(theirs, "b (t n) d -> b t n d", t=4).mean(2)
    torch.testing.assert_close(ours.frames, frames, rtol=0, atol=1e-5)
    loaded = model.pretrained_params
    assert {"visual.temporal_blocks.1.attn.qkv.weight", "visual.spatial_norm.weight"} <= loaded
    assert not any(n.startswith(("visual_proj", "text")) for n in model.pretrained_params)


def test_videoprism_trains_with_token_dropping_and_checkpointing(tmp_path):
    model = _model(write_tiny_videoprism(tmp_path / "vp"))
    model.train()
    videos = torch.randn(2, 3, 4, 16, 16)
    out = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(1))
    assert out.frames.shape[:2] == (2, 4) and torch.isfinite(out.clip).all()
    out.clip.sum().backward()
    assert all(p.grad is not None for p in model.visual.parameters())
    model.zero_grad()
    plain = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    model.visual.set_grad_checkpointing(True)
    again = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-6)
    # the temporal blocks are temporal parameters (stage freeze: temporal), and lock() walks them last
    names = {n for n, _ in model.visual.named_temporal_parameters()}
    assert "temporal_embed" in names and "temporal_blocks.0.attn.qkv.weight" in names
    model.visual.lock(unlocked_groups=1)
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("temporal_blocks.1.", "norm.")) for n in trainable)
    with pytest.raises(ConfigError, match="factorised.*tube"):
        model.visual.mask_tube(False)


def test_videoprism_folder_through_the_api_and_errors(tmp_path, test_video):
    folder = write_tiny_videoprism(tmp_path / "vp")
    model, _, evaluate = videovl.create_model_and_transforms(folder)
    assert model.cfg.vision.attention == "factorised"
    assert evaluate(test_video).shape == (3, 4, 16, 16)
    with pytest.raises(ConfigError, match="temporal_depth is 2.*attention: factorised"):
        videovl.create_model({"name": "test", "vision": {"temporal_depth": 2}})
    with pytest.raises(ConfigError, match="'factorised'.*class_token: false"):
        videovl.create_model({"name": "test", "vision": {"attention": "factorised", "temporal_depth": 1}})


def test_checkpoints_of_vjepa2_and_videoprism_starts_rebuild_them(tmp_path):
    from tiny_checkpoints import write_tiny_vjepa2

    for name, folder in (
        ("vjepa2", write_tiny_vjepa2(tmp_path / "vjepa2")),
        ("videoprism", write_tiny_videoprism(tmp_path / "vp", "clip")),
    ):
        cfg = videovl.load_config(overrides=["model.name=test", f"model.vision.pretrained={folder}"])
        model = videovl.create_model(cfg.model).eval()
        videovl.save_checkpoint(model, cfg, tmp_path / f"ckpt-{name}")
        again, _ = videovl.load_checkpoint(tmp_path / f"ckpt-{name}")
        # the checkpoint holds the weights: it no longer points at the folder
        assert again.cfg.vision == dataclasses.replace(model.cfg.vision, pretrained=None)
        videos = torch.randn(2, 3, 4, 16, 16)
        with torch.no_grad():
            rebuilt = again.eval().encode_video(videos).clip
            torch.testing.assert_close(rebuilt, model.encode_video(videos).clip)
