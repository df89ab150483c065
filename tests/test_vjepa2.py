"""V-JEPA 2 folders (transformers' VJEPA2Model) into the visual encoder: 3D rotary positions, no class
token, no absolute positions; against transformers' own model."""

import pytest
import torch
from einops import rearrange
from tiny_checkpoints import write_tiny_vjepa2

import videovl
from videovl.config import ConfigError


def _model(folder, **vision):
    return videovl.create_model(
        {"name": "test", "vision": {"pretrained": str(folder), **vision}, "caption": {"enabled": False}}
    )


def _theirs(reference, x):
    """transformers' encoder tokens for videos ``x`` (B, C, T, H, W): (B, T' * N, D) in (t, h, w) order."""
    frames = rearrange(x, "b c t h w -> b t c h w")
    return reference(pixel_values_videos=frames, skip_predictor=True).last_hidden_state


@pytest.mark.parametrize("width", [32, 48])  # head widths 16 (4 channels left unrotated) and 24 (none)
@torch.no_grad()
def test_vjepa2_folder_equals_transformers(tmp_path, width):
    from transformers import VJEPA2Model

    folder = write_tiny_vjepa2(tmp_path / "vjepa2", hidden_size=width)
    model = _model(folder)
    encoder = model.visual.eval()
    cfg = encoder.cfg
    assert (cfg.attention, cfg.tubelet_size, cfg.pos_embed, cfg.rope, cfg.class_token, cfg.pool) == (
        "joint", 2, "none", "3d", False, "mean",
    )  # fmt: skip
    reference = VJEPA2Model.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    theirs = _theirs(reference, x)
    ours = encoder(x)
    torch.testing.assert_close(ours.tokens, theirs, rtol=0, atol=1e-5)
    print("vjepa2 tokens max diff", (ours.tokens - theirs).abs().max().item())
    torch.testing.assert_close(ours.pooled, theirs.mean(1), rtol=0, atol=1e-5)
    frames = rearrange(theirs, "b (t n) d -> b t n d", t=2).mean(2)
    torch.testing.assert_close(ours.frames, frames, rtol=0, atol=1e-5)
    # an image is V-JEPA 2's one-frame input (the frame repeated into a tubelet)
    image = encoder.forward_features(x[:, :, 0])
    torch.testing.assert_close(image, _theirs(reference, x[:, :, :1]), rtol=0, atol=1e-5)
    # the encoder is pretrained (the predictor is left out); the joint space and text tower are new
    assert {"visual.blocks.0.attn.qkv.weight", "visual.norm.weight"} <= model.pretrained_params
    assert not any(n.startswith(("visual_proj", "text", "logit")) for n in model.pretrained_params)


@torch.no_grad()
def test_vjepa2_token_dropping_keeps_each_kept_token_rotated_by_its_place(tmp_path):
    from transformers import VJEPA2Model

    folder = write_tiny_vjepa2(tmp_path / "vjepa2")
    encoder = _model(folder).visual.eval()
    reference = VJEPA2Model.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    kept = encoder.draw_kept(x, 0.5, torch.Generator().manual_seed(0), tube=False)  # (B, T', K)
    assert kept.shape == (2, 2, 2) and not torch.equal(kept[:, 0], kept[:, 1])
    ours = encoder(x, kept=kept).tokens
    # V-JEPA 2's own masked encoding: keep tokens by their index in the clip, rotate by that index
    enc = reference.encoder
    ids = rearrange(kept + 4 * torch.arange(2)[:, None], "b t k -> b (t k)")  # 4 tokens a frame
    h = enc.embeddings(rearrange(x, "b c t h w -> b t c h w"))
    h = h.gather(1, ids[..., None].expand(-1, -1, h.shape[-1]))
    for layer in enc.layer:
        h = layer(h, position_mask=ids)[0]
    theirs = enc.layernorm(h)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    print("vjepa2 dropped tokens max diff", (ours - theirs).abs().max().item())


def test_vjepa2_trains_with_token_dropping_and_checkpointing(tmp_path):
    model = _model(write_tiny_vjepa2(tmp_path / "vjepa2"), num_frames=8)
    model.train()
    videos = torch.randn(2, 3, 8, 16, 16)
    out = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(1))
    assert out.frames.shape[:2] == (2, 4) and torch.isfinite(out.clip).all()
    out.clip.sum().backward()
    assert all(p.grad is not None for n, p in model.visual.named_parameters())
    model.zero_grad()
    plain = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    model.visual.set_grad_checkpointing(True)
    again = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-6)
    # the ordered clip pool reads the frames of a rotary-only encoder too
    ordered = videovl.create_model(
        {
            "name": "test",
            "vision": {"pretrained": str(tmp_path / "vjepa2")},
            "caption": {"enabled": False},
            "clip_pool": "ordered",
        }  # fmt: skip
    )
    with torch.no_grad():
        assert torch.isfinite(ordered.eval().encode_video(videos[:, :, :4]).clip).all()


@torch.no_grad()
def test_a_vjepa2_classifier_folder_gives_its_encoder(tmp_path):
    from transformers import VJEPA2ForVideoClassification

    folder = write_tiny_vjepa2(tmp_path / "ssv2", classifier=True, num_labels=3)
    encoder = _model(folder).visual.eval()
    reference = VJEPA2ForVideoClassification.from_pretrained(folder).eval()
    x = torch.randn(1, 3, 4, 16, 16)
    torch.testing.assert_close(encoder.forward_features(x), _theirs(reference.vjepa2, x), rtol=0, atol=1e-5)


def test_vjepa2_folder_through_the_api_and_errors(tmp_path, test_video):
    folder = write_tiny_vjepa2(tmp_path / "vjepa2")
    model, _, evaluate = videovl.create_model_and_transforms(folder)
    assert model.cfg.vision.pretrained == str(folder) and model.cfg.vision.rope == "3d"
    assert evaluate(test_video).shape == (3, 4, 16, 16)
    with pytest.raises(ConfigError, match="rope is '3d'.*attention: joint"):  # the general option alone
        videovl.create_model({"name": "test", "vision": {"rope": "3d", "attention": "divided"}})
    with pytest.raises(ConfigError, match="expected 'timesformer' or 'videomae' or 'vjepa2'"):
        (tmp_path / "vit").mkdir()
        (tmp_path / "vit" / "config.json").write_text('{"model_type": "vit"}')
        _model(tmp_path / "vit")
