import dataclasses

import pytest
import torch

from videovl.config import ConfigError, VisionConfig
from videovl.models.inflate import from_timm, inflate_patch_kernel

timm = pytest.importorskip("timm")

# Small random timm ViTs of distinct families, built through timm.create_model's own overrides.
TIMM = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, depth=2, embed_dim=48)),
    "clip": ("vit_base_patch16_clip_224", dict(img_size=32, depth=2, embed_dim=64, num_heads=2)),
    "clip_quickgelu": (
        "vit_base_patch16_clip_quickgelu_224",
        dict(img_size=32, depth=2, embed_dim=64, num_heads=2),
    ),
    "deit3": ("deit3_small_patch16_224", dict(img_size=32, depth=2, embed_dim=64, num_heads=2)),
}


def timm_vit(key: str, **extra) -> torch.nn.Module:
    """A timm ViT with every weight perturbed (biases, norms, class token included), in eval mode."""
    name, kwargs = TIMM[key]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs, **extra).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def cfg(**overrides) -> VisionConfig:
    return VisionConfig(**{"image_size": 32, "num_frames": 4, **overrides})


@pytest.mark.parametrize("key", list(TIMM))
def test_image_tokens_equal_timm_forward_features(key):
    model = timm_vit(key)
    enc = from_timm(cfg(), model=model).eval()
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(img), model.forward_features(img), atol=1e-5, rtol=0)
    assert enc.width == model.embed_dim


def test_architecture_is_read_from_timm():
    enc = from_timm(cfg(), model=timm_vit("clip_quickgelu"))
    c = enc.cfg
    assert (c.width, c.depth, c.heads, c.patch_size, c.mlp_ratio) == (64, 2, 2, 16, 4.0)
    assert c.pre_norm and c.norm_eps == 1e-5 and c.act == "quick_gelu" and c.layer_scale is None
    assert enc.patch_embed.proj.bias is None
    assert from_timm(cfg(), model=timm_vit("deit3")).cfg.layer_scale is not None


@pytest.mark.parametrize("inflation", ["centre", "mean"])
@pytest.mark.parametrize("tubelet", [1, 2])
@pytest.mark.parametrize("key", ["vit", "clip"])
def test_repeated_image_video_pools_like_the_image(key, inflation, tubelet):
    enc = from_timm(cfg(tubelet_size=tubelet, inflation=inflation), model=timm_vit(key)).eval()
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image, video = enc(img), enc(img.unsqueeze(2).repeat(1, 1, 4, 1, 1))
    torch.testing.assert_close(video.pooled, image.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(video.frames, image.frames.expand_as(video.frames), atol=1e-5, rtol=0)


def test_inflated_kernel_layouts():
    w = torch.randn(4, 3, 2, 2)
    centre = inflate_patch_kernel(w, 3, "centre")
    assert torch.equal(centre[:, :, 1], w) and not centre[:, :, [0, 2]].any()
    torch.testing.assert_close(inflate_patch_kernel(w, 3, "mean").sum(2), w)
    with pytest.raises(ConfigError, match="inflation is 'middle'"):
        inflate_patch_kernel(w, 3, "middle")


def test_temporal_branch_starts_as_a_copy_of_spatial_attention_with_zero_output():
    enc = from_timm(cfg(), model=timm_vit("vit"))
    blk = enc.blocks[1]
    assert torch.equal(blk.temporal_attn.qkv.weight, blk.attn.qkv.weight)
    assert torch.equal(blk.temporal_norm.weight, blk.norm1.weight)
    assert not blk.temporal_attn.proj.weight.any() and not enc.temporal_embed.any()


def test_new_image_size_resamples_positions_as_timm_does():
    model = timm_vit("vit", dynamic_img_size=True)  # timm resamples its own embedding per input size
    enc = from_timm(cfg(image_size=48), model=model).eval()
    img = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(img), model.forward_features(img), atol=1e-5, rtol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_file_loads_offline(tmp_path, suffix):
    name, kwargs = TIMM["clip"]
    model = timm_vit("clip")
    path = tmp_path / f"weights{suffix}"
    state = dict(model.state_dict(), **{"head.weight": torch.zeros(5, 64), "head.bias": torch.zeros(5)})
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    enc = from_timm(cfg(timm_model=name, timm_checkpoint=str(path)), **kwargs).eval()
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(img), model.forward_features(img), atol=1e-5, rtol=0)


def test_checkpoint_errors_are_explicit(tmp_path):
    name, kwargs = TIMM["clip"]
    with pytest.raises(ConfigError, match="timm_model is not set"):
        from_timm(cfg(timm_checkpoint=str(tmp_path / "w.pt")))
    with pytest.raises(ConfigError, match="does not exist"):
        from_timm(cfg(timm_model=name, timm_checkpoint=str(tmp_path / "missing.pt")), **kwargs)
    path = tmp_path / "other.pt"
    torch.save(timm_vit("vit").state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit timm model"):
        from_timm(cfg(timm_model=name, timm_checkpoint=str(path)), **kwargs)
    with pytest.raises(ConfigError, match="not both"):
        from_timm(dataclasses.replace(cfg(), timm_checkpoint=str(path)), model=timm_vit("vit"))
    with pytest.raises(ConfigError, match="register tokens"):
        from_timm(cfg(), model=timm_vit("vit", reg_tokens=2))
