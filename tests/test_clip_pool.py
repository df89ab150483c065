"""``model.clip_pool: ordered``: a clip embedding that keeps the order of the frames."""

from __future__ import annotations

import pytest
import torch

import videovl
from videovl.config import ConfigError
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.train.stages import apply_freeze

pytestmark = pytest.mark.usefixtures("one_thread")


def model(clip_pool: str):
    cfg = videovl.model_config("test", clip_pool=clip_pool)
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    torch.manual_seed(0)
    return videovl.create_model(cfg).eval()


def clips(m, n: int = 2) -> torch.Tensor:
    v = m.cfg.vision
    return torch.randn(
        n, 3, v.num_frames, v.image_size, v.image_size, generator=torch.Generator().manual_seed(1)
    )


@torch.no_grad()
def test_a_new_ordered_pool_starts_as_the_encoder_pool():
    ordered, plain = model("ordered"), model("encoder")
    assert ordered.ordered_proj.shape == (4, ordered.visual.width, ordered.cfg.embed_dim)
    assert not ordered.ordered_proj.any()
    x = clips(ordered)
    torch.testing.assert_close(ordered.encode_video(x).clip, plain.encode_video(x).clip)


@torch.no_grad()
def test_the_ordered_pool_tells_a_clip_from_the_clip_played_backwards():
    m = model("ordered")
    x, backwards = clips(m), clips(m).flip(2)
    # A fresh encoder is blind to time (zero temporal embedding and temporal branch): its own pool
    # gives a clip and its reversal the same embedding.
    torch.testing.assert_close(m.encode_video(x).clip, m.encode_video(backwards).clip)
    m.ordered_proj.normal_(std=0.02)
    assert (m.encode_video(x).clip - m.encode_video(backwards).clip).abs().max() > 1e-3


@torch.no_grad()
def test_an_image_is_a_still_clip():
    m = model("ordered")
    m.ordered_proj.normal_(std=0.02)
    image = clips(m, 2)[:, :, 0]
    still = image.unsqueeze(2).expand(-1, -1, m.cfg.vision.num_frames, -1, -1)
    torch.testing.assert_close(m.encode_video(image).clip, m.encode_video(still).clip, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_clips_of_another_length_get_the_maps_interpolated_over_time():
    m = model("ordered")
    m.ordered_proj.normal_(std=0.02)
    x = clips(m)
    longer = x.repeat_interleave(2, dim=2)  # each frame twice: 8 positions for maps built for 4
    out = m.encode_video(longer).clip
    assert out.shape == m.encode_video(x).clip.shape and torch.isfinite(out).all()
    assert (out - m.encode_video(longer.flip(2)).clip).abs().max() > 1e-3  # still tells the order


def test_freezing_the_projections_freezes_the_maps_and_errors_name_the_fix():
    m = model("ordered")
    apply_freeze(m, ["text"])
    assert m.ordered_proj.requires_grad
    apply_freeze(m, ["visual", "text", "projections"])
    assert not m.ordered_proj.requires_grad
    with pytest.raises(ConfigError, match="model.clip_pool is 'max'"):
        model("max")


def test_a_checkpoint_without_the_maps_loads_into_an_ordered_pool_and_back(tmp_path):
    from videovl.config import Config
    from videovl.models.checkpoint import load_checkpoint, save_checkpoint

    plain = model("encoder")
    save_checkpoint(plain, Config(model=plain.cfg), tmp_path / "plain")
    ordered, cfg = load_checkpoint(tmp_path / "plain", clip_pool="ordered")
    assert cfg.model.clip_pool == "ordered" and not ordered.ordered_proj.any()
    assert "ordered_proj" not in ordered.pretrained_params  # new: learns at the stage's full rate
    x = clips(plain)
    with torch.no_grad():
        torch.testing.assert_close(ordered.eval().encode_video(x).clip, plain.encode_video(x).clip)
    save_checkpoint(ordered, cfg, tmp_path / "ordered")
    back, _ = load_checkpoint(tmp_path / "ordered", clip_pool="encoder")
    assert back.ordered_proj is None
