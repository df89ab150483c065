"""TimeSformer and VideoMAE folders into the visual encoder, against transformers' models."""

import pytest
import torch
from einops import rearrange
from tiny_checkpoints import write_tiny_video_model

import videovl
from videovl.config import ConfigError


def _encoder(folder):
    model = videovl.create_model(
        {"name": "test", "vision": {"pretrained": str(folder)}, "caption": {"enabled": False}}
    )
    return model, model.visual.eval()


@pytest.mark.parametrize("attention", ["divided_space_time", "joint_space_time"])
@torch.no_grad()
def test_timesformer_folder_equals_transformers(tmp_path, attention):
    from transformers import TimesformerModel

    folder = write_tiny_video_model(tmp_path / "tsf", "timesformer", attention_type=attention)
    model, encoder = _encoder(folder)
    assert encoder.cfg.attention == attention.split("_")[0] and encoder.cfg.tubelet_size == 1
    reference = TimesformerModel.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 4, 16, 16)  # (B, C, T, H, W)
    theirs = reference(rearrange(x, "b c t h w -> b t c h w")).last_hidden_state  # cls, then (h w t)
    ours = encoder.forward_features(x)  # cls, then (t h w)
    grid = {"h": 2, "w": 2, "t": 4}
    theirs = torch.cat([theirs[:, :1], rearrange(theirs[:, 1:], "b (h w t) d -> b (t h w) d", **grid)], 1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # a video checkpoint's temporal branch is pretrained too; the joint space is new
    assert "visual.temporal_embed" in model.pretrained_params
    assert not any(n.startswith(("visual_proj", "text")) for n in model.pretrained_params)


@pytest.mark.parametrize("mean_pooling", [True, False])
@torch.no_grad()
def test_videomae_folder_equals_transformers(tmp_path, mean_pooling):
    from transformers import VideoMAEModel

    folder = write_tiny_video_model(tmp_path / "mae", "videomae", use_mean_pooling=mean_pooling)
    _, encoder = _encoder(folder)
    cfg = encoder.cfg
    assert (cfg.attention, cfg.tubelet_size, cfg.pos_embed, cfg.class_token) == (
        "joint",
        2,
        "sinusoidal",
        False,
    )
    reference = VideoMAEModel.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    theirs = reference(rearrange(x, "b c t h w -> b t c h w")).last_hidden_state  # (t h w) as ours
    torch.testing.assert_close(encoder.forward_features(x), theirs, rtol=0, atol=1e-5)


@torch.no_grad()
def test_videomae_classifier_folder_brings_its_norm_after_pooling(tmp_path):
    from transformers import VideoMAEForVideoClassification

    folder = write_tiny_video_model(tmp_path / "k400", "videomae", classifier=True, layer_norm_eps=1e-5)
    model, encoder = _encoder(folder)
    reference = VideoMAEForVideoClassification.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    tokens = reference.videomae(rearrange(x, "b c t h w -> b t c h w")).last_hidden_state
    torch.testing.assert_close(encoder(x).pooled, reference.fc_norm(tokens.mean(1)), rtol=0, atol=1e-5)
    assert {"visual.norm.weight", "visual.norm.bias"} <= model.pretrained_params


def test_a_folder_of_another_kind_is_an_error(tmp_path):
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(
        ConfigError, match="config.json has model_type 'vit'; expected 'timesformer' or 'videomae'"
    ):
        _encoder(tmp_path / "vit")
    with pytest.raises(ConfigError, match="MCG-NJU/videomae-base.*local folder"):
        _encoder("MCG-NJU/videomae-base")


@torch.no_grad()
def test_videomae_pretraining_folder_gives_its_encoder(tmp_path):
    from tiny_checkpoints import VIDEO_SIZE, perturb
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    torch.manual_seed(0)
    reference = VideoMAEForPreTraining(
        VideoMAEConfig(
            **VIDEO_SIZE,
            decoder_hidden_size=16,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=32,
        )
    ).eval()
    perturb(reference)
    reference.save_pretrained(tmp_path / "pt")
    _, encoder = _encoder(tmp_path / "pt")  # the decoder is left out; the encoder is all there
    x = torch.randn(1, 3, 4, 16, 16)
    theirs = reference.videomae(rearrange(x, "b c t h w -> b t c h w")).last_hidden_state
    torch.testing.assert_close(encoder.forward_features(x), theirs, rtol=0, atol=1e-5)
