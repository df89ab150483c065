"""Export a videovl model back to CLIP, SigLIP, timm, TimeSformer, V-JEPA 2 and VideoPrism; reload with
the other library, same outputs."""

import pytest
import torch
from einops import rearrange
from tiny_checkpoints import (
    clip_tokenizer,
    perturb,
    write_tiny_clip,
    write_tiny_siglip,
    write_tiny_video_model,
    write_tiny_videoprism,
    write_tiny_vjepa2,
)

import videovl
from tools import export as tool
from videovl.config import ConfigError
from videovl.models.export import (
    EXPORT_FORMATS,
    export,
    export_clip,
    export_siglip,
    export_timesformer,
    export_timm,
    export_videoprism,
    export_vjepa2,
)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.mark.parametrize("inflation", ["centre", "mean"])
@torch.no_grad()
def test_clip_round_trip(clip_dir, tmp_path, inflation):
    from transformers import CLIPModel

    model = videovl.create_model(
        {
            "name": "clip",
            "pretrained": str(clip_dir),
            "vision": {"tubelet_size": 2, "num_frames": 4, "inflation": inflation},
        }
    )
    perturb(model, seed=1)  # as after training, temporal branch included
    model.eval()
    left_out = export_clip(model, tmp_path / "out")
    assert left_out and all(".temporal_" in k or k == "visual.temporal_embed" for k in left_out)
    clip = CLIPModel.from_pretrained(tmp_path / "out").eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = clip_tokenizer()(["a cat", "dogs run"], padding=True, return_tensors="pt")
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    torch.testing.assert_close(
        clip.get_image_features(pixel_values=images).pooler_output,
        model.encode_video(images, normalize=False).clip,
        rtol=0,
        atol=1e-5,
    )
    torch.testing.assert_close(
        clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
        model.encode_text(ids, mask, normalize=False).sentence,
        rtol=0,
        atol=1e-5,
    )
    torch.testing.assert_close(clip.logit_scale, model.logit_scale)


@torch.no_grad()
def test_timm_round_trip(tmp_path):
    import timm
    from safetensors.torch import load_file

    model = videovl.create_model("test", caption={"enabled": False}, vision={"tubelet_size": 2})
    perturb(model)
    model.eval()
    left_out = export_timm(model, tmp_path / "vit.safetensors")
    assert "visual.temporal_embed" in left_out and any("temporal_attn" in k for k in left_out)
    v = model.visual.cfg
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=v.image_size,
        patch_size=v.patch_size,
        embed_dim=v.width,
        depth=v.depth,
        num_heads=v.heads,
    ).eval()
    vit.load_state_dict(load_file(tmp_path / "vit.safetensors"), strict=True)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        vit.forward_features(images), model.visual.forward_features(images), rtol=0, atol=1e-5
    )


@torch.no_grad()
def test_timesformer_round_trip(tmp_path):
    from transformers import TimesformerModel

    folder = write_tiny_video_model(tmp_path / "tsf", "timesformer")
    model = videovl.create_model(
        {"name": "test", "vision": {"pretrained": str(folder)}, "caption": {"enabled": False}}
    )
    perturb(model, seed=2)  # trained further
    model.eval()
    export_timesformer(model, tmp_path / "out")
    tsf = TimesformerModel.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 3, 4, 16, 16)
    theirs = tsf(rearrange(x, "b c t h w -> b t c h w")).last_hidden_state
    theirs = torch.cat([theirs[:, :1], rearrange(theirs[:, 1:], "b (h w t) d -> b (t h w) d", h=2, w=2)], 1)
    torch.testing.assert_close(model.visual.forward_features(x), theirs, rtol=0, atol=1e-5)


def test_export_tool_writes_a_clip_folder_with_its_tokenizer(clip_dir, tmp_path, capsys):
    from transformers import AutoTokenizer, CLIPModel

    cfg = videovl.load_config(overrides=["model.name=clip", f"model.pretrained={clip_dir}"])
    model = videovl.create_model(cfg.model)
    videovl.save_checkpoint(model, cfg, tmp_path / "ckpt")
    out = tool.main(
        ["--checkpoint", str(tmp_path / "ckpt"), "--format", "clip", "--out", str(tmp_path / "clip")]
    )
    assert "left out" in capsys.readouterr().out and out["left_out"]
    CLIPModel.from_pretrained(tmp_path / "clip")
    assert AutoTokenizer.from_pretrained(tmp_path / "clip")("a cat") == clip_tokenizer()("a cat")
    with pytest.raises(ConfigError, match="CLIP's layout.*pre_norm.*text tower 'bert'"):
        export_clip(videovl.create_model("test", caption={"enabled": False}), tmp_path / "nope")


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return write_tiny_siglip(tmp_path_factory.mktemp("siglip") / "siglip")


def _trained_siglip(siglip_dir, tmp_path, **model):
    """A model started from the SigLIP folder and trained with its visual projection frozen (every other
    weight, the text projection included, moved), saved as a checkpoint."""
    cfg = videovl.load_config(
        overrides=[
            "model.name=clip",
            f"model.pretrained={siglip_dir}",
            "model.vision.tubelet_size=2",
            "model.vision.num_frames=4",
            *(f"model.{k}={v}" for k, v in model.items()),
        ]
    )
    model = videovl.create_model(cfg.model)
    perturb(model, seed=3)
    with torch.no_grad():
        model.visual_proj.weight.copy_(torch.eye(model.cfg.embed_dim))
        if model.ordered_proj is not None:
            model.ordered_proj.zero_()
    videovl.save_checkpoint(model, cfg, tmp_path / "ckpt")
    return model.eval(), tmp_path / "ckpt"


@torch.no_grad()
def test_siglip_round_trip_through_the_tool(siglip_dir, tmp_path, capsys):
    from transformers import AutoTokenizer, SiglipModel

    model, ckpt = _trained_siglip(siglip_dir, tmp_path)
    assert not torch.equal(model.text_proj.weight, torch.eye(32))  # folded into the text head
    out = tool.main(["--checkpoint", str(ckpt), "--format", "siglip", "--out", str(tmp_path / "out")])
    assert out["left_out"] and all(".temporal_" in k or k == "visual.temporal_embed" for k in out["left_out"])
    assert "left out" in capsys.readouterr().out
    siglip = SiglipModel.from_pretrained(tmp_path / "out").eval()
    images = torch.randn(3, 3, 32, 32)
    tokens = clip_tokenizer()(["a cat", "dogs run", "the digit 3"], padding=True, return_tensors="pt")
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    video = model.encode_video(images, normalize=False).clip
    text = model.encode_text(ids, mask, normalize=False).sentence
    torch.testing.assert_close(
        siglip.get_image_features(pixel_values=images).pooler_output, video, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        siglip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, text, rtol=0, atol=1e-5
    )
    ours = model(images, ids, mask)
    logits = ours.logit_scale * ours.text_features.sentence @ ours.video_features.clip.T + ours.logit_bias
    theirs = siglip(pixel_values=images, input_ids=ids, attention_mask=mask).logits_per_text
    # logits of ~10 after a scale of ~120: float32 rounds them ~1e-6 apart relative, as in test_siglip
    torch.testing.assert_close(theirs, logits, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(siglip.logit_scale.exp()[0], ours.logit_scale, rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(tmp_path / "out")("a cat") == clip_tokenizer()("a cat")


def test_siglip_export_refuses_a_visual_projection_moved_off_the_identity(siglip_dir, tmp_path):
    model, _ = _trained_siglip(siglip_dir, tmp_path)
    with torch.no_grad():
        model.visual_proj.weight[0, 1] += 1e-3
    with pytest.raises(ConfigError, match=r"visual projection \(visual_proj\).*largest difference 0.001"):
        export_siglip(model, tmp_path / "out")
    # the ordered pooling's maps reach an image too: summed over time, they count as the projection
    model, _ = _trained_siglip(siglip_dir, tmp_path / "ordered", clip_pool="ordered")
    export_siglip(model, tmp_path / "zero")  # zero maps: the identity still
    with torch.no_grad():
        model.ordered_proj[0, 0, 0] = 0.5
    with pytest.raises(ConfigError, match="ordered_proj"):
        export_siglip(model, tmp_path / "moved")


def test_siglip_export_refuses_a_model_of_another_layout(clip_dir, tmp_path):
    clip = videovl.create_model({"name": "clip", "pretrained": str(clip_dir)})
    with pytest.raises(
        ConfigError, match="SigLIP's layout.*'class_token': True.*'pool': 'cls'.*clip_text_model"
    ):
        export_siglip(clip, tmp_path / "nope")


@torch.no_grad()
def test_vjepa2_round_trip_through_the_tool(tmp_path, capsys):
    from transformers import VJEPA2Model

    folder = write_tiny_vjepa2(tmp_path / "vjepa2")
    cfg = videovl.load_config(
        overrides=["model.name=test", f"model.vision.pretrained={folder}", "model.caption.enabled=false"]
    )
    model = videovl.create_model(cfg.model)
    perturb(model, seed=4)  # trained further
    videovl.save_checkpoint(model, cfg, tmp_path / "ckpt")
    out = tool.main(
        ["--checkpoint", str(tmp_path / "ckpt"), "--format", "vjepa2", "--out", str(tmp_path / "out")]
    )
    assert out["left_out"] == [] and "encoder only" in capsys.readouterr().out
    # the folder holds the encoder alone: transformers names the predictor's keys as missing and starts it
    vjepa2, info = VJEPA2Model.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("predictor.") for k in info["missing_keys"])
    assert not info["unexpected_keys"]
    vjepa2.eval()
    x = torch.randn(2, 3, 4, 16, 16)
    theirs = vjepa2(pixel_values_videos=rearrange(x, "b c t h w -> b t c h w"), skip_predictor=True)
    torch.testing.assert_close(theirs.last_hidden_state, model.visual.eval()(x).tokens, rtol=0, atol=1e-5)


def test_vjepa2_export_refuses_a_tower_of_another_layout(tmp_path):
    model = videovl.create_model("test", caption={"enabled": False})
    with pytest.raises(ConfigError, match="V-JEPA 2's layout.*'attention': 'divided'.*'rope': 'none'"):
        export_vjepa2(model, tmp_path / "nope")


@torch.no_grad()
def test_videoprism_round_trip(tmp_path):
    from transformers import VideoPrismVisionModel

    folder = write_tiny_videoprism(tmp_path / "vp")
    model = videovl.create_model(
        {"name": "test", "vision": {"pretrained": str(folder)}, "caption": {"enabled": False}}
    )
    perturb(model, seed=5)  # trained further: every norm off VideoPrism's weight + 1 as well
    model.eval()
    assert export_videoprism(model, tmp_path / "out") == []
    backbone = VideoPrismVisionModel.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 3, 4, 16, 16)
    theirs = backbone(pixel_values_videos=rearrange(x, "b c t h w -> b t c h w")).last_hidden_state
    torch.testing.assert_close(theirs, model.visual(x).tokens, rtol=0, atol=1e-5)


def test_videoprism_tool_leaves_out_the_joint_blocks_and_head_of_a_video_text_model(tmp_path, capsys):
    from transformers import VideoPrismClipModel, VideoPrismVisionModel

    folder = write_tiny_videoprism(tmp_path / "vp", "clip")
    cfg = videovl.load_config(overrides=["model.name=clip", f"model.pretrained={folder}"])
    videovl.save_checkpoint(videovl.create_model(cfg.model), cfg, tmp_path / "ckpt")
    argv = ["--checkpoint", str(tmp_path / "ckpt"), "--format", "videoprism", "--out", str(tmp_path / "out")]
    left_out = tool.main(argv)["left_out"]
    assert left_out and all(k.startswith(("visual.joint_blocks.", "visual.attn_pool.")) for k in left_out)
    assert "left out" in capsys.readouterr().out
    exported = VideoPrismVisionModel.from_pretrained(tmp_path / "out").state_dict()
    original = VideoPrismClipModel.from_pretrained(folder).video_model.vision_model.state_dict()
    assert exported.keys() == original.keys()
    for k, v in original.items():  # the norms' weights go through + 1 and - 1: float32 rounding apart
        torch.testing.assert_close(exported[k], v, rtol=0, atol=1e-6)


def test_videoprism_export_refuses_a_tower_of_another_layout(tmp_path):
    model = videovl.create_model("test", caption={"enabled": False})
    with pytest.raises(ConfigError, match="VideoPrism's layout.*'attention': 'divided'.*'class_token': True"):
        export_videoprism(model, tmp_path / "nope")


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_residual_frames_have_no_export_format(fmt, tmp_path):
    model = videovl.create_model("test", caption={"enabled": False}, vision={"residual_frames": "previous"})
    with pytest.raises(ConfigError, match=f"cannot export to {fmt}: the visual tower reads residual frames"):
        export(model, fmt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
