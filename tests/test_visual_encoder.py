import dataclasses

import pytest
import torch
from torch import nn

import videovl
from videovl.config import ConfigError, VisionConfig
from videovl.models.layers import Block, PatchEmbed3D, SpaceTimeBlock, resample_spatial, resample_temporal
from videovl.models.visual import VisualEncoder

TINY = VisionConfig(image_size=32, patch_size=8, num_frames=4, width=32, depth=2, heads=2)


def make(**overrides) -> VisualEncoder:
    torch.manual_seed(0)
    return VisualEncoder(dataclasses.replace(TINY, **overrides))


def randomise_temporal(enc: VisualEncoder) -> None:
    """Give the zero-initialised temporal parts random values, as after training."""
    with torch.no_grad():
        for p in enc.temporal_parameters():
            p.normal_(0, 0.1)


@pytest.mark.parametrize("attention", ["divided", "joint"])
@pytest.mark.parametrize("tubelet", [1, 2])
@pytest.mark.parametrize("class_token", [True, False])
def test_shapes_for_images_and_videos(attention, tubelet, class_token):
    enc = make(
        attention=attention,
        tubelet_size=tubelet,
        class_token=class_token,
        pool="cls" if class_token else "mean",
    )
    prefix = int(class_token)
    for x, t in ((torch.randn(2, 3, 32, 32), 1), (torch.randn(2, 3, 4, 32, 32), 4 // tubelet)):
        out = enc(x)
        assert out.pooled.shape == (2, 32)
        assert out.frames.shape == (2, t, 32)
        assert out.tokens.shape == (2, prefix + t * 16, 32)
        assert torch.isfinite(out.tokens).all()
        assert torch.equal(enc.forward_features(x), out.tokens)
        if class_token:
            assert torch.equal(out.pooled, out.tokens[:, 0])
        # frames are the per-time-step means of the patch tokens
        patches = out.tokens[:, prefix:].reshape(2, t, 16, 32)
        torch.testing.assert_close(out.frames, patches.mean(2))


def test_image_is_a_one_tubelet_clip_and_ignores_temporal_weights():
    enc = make(tubelet_size=2).eval()
    img = torch.randn(2, 3, 32, 32)
    before = enc(img).tokens
    torch.testing.assert_close(enc(img.unsqueeze(2).repeat(1, 1, 2, 1, 1)).tokens, before)
    randomise_temporal(enc)
    assert torch.equal(enc(img).tokens, before)  # no temporal embedding or attention with T' = 1
    video = torch.randn(2, 3, 4, 32, 32)
    assert not torch.allclose(enc(video).tokens, make(tubelet_size=2).eval()(video).tokens)


def naive_divided_block(blk: SpaceTimeBlock, x: torch.Tensor, cls: torch.Tensor):
    """TimeSformer's divided block written with loops over positions and frames."""
    b, t, n, d = x.shape
    x = x.clone()
    temporal = torch.zeros_like(x)
    for i in range(n):
        temporal[:, :, i] = blk.temporal_attn(blk.temporal_norm(x[:, :, i]))
    x = x + temporal
    cls_outs, patches = [], torch.zeros_like(x)
    for f in range(t):
        seq = torch.cat([cls, x[:, f]], dim=1)
        out = blk.ls1(blk.attn(blk.norm1(seq)))
        cls_outs.append(out[:, :1])
        patches[:, f] = out[:, 1:]
    cls = cls + torch.stack(cls_outs).mean(0)
    x = x + patches
    return x + blk.ls2(blk.mlp(blk.norm2(x))), cls + blk.ls2(blk.mlp(blk.norm2(cls)))


def test_divided_block_matches_naive_loops():
    enc = make(layer_scale=0.5)
    randomise_temporal(enc)
    blk = enc.blocks[0]
    x, cls = torch.randn(2, 3, 5, 32), torch.randn(2, 1, 32)
    got, want = blk(x, cls), naive_divided_block(blk, x, cls)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)


def test_joint_block_is_one_attention_over_all_tokens():
    enc = make(attention="joint")
    blk = enc.blocks[0]
    x, cls = torch.randn(2, 3, 5, 32), torch.randn(2, 1, 32)
    seq = torch.cat([cls, x.reshape(2, 15, 32)], dim=1)
    seq = seq + blk.attn(blk.norm1(seq))
    seq = seq + blk.mlp(blk.norm2(seq))
    got_x, got_cls = blk(x, cls)
    torch.testing.assert_close(torch.cat([got_cls, got_x.reshape(2, 15, 32)], 1), seq, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["divided", "joint"])
def test_one_frame_runs_the_plain_vit_block(attention):
    enc = make(attention=attention, layer_scale=0.5)
    randomise_temporal(enc)
    blk = enc.blocks[0]
    x, cls = torch.randn(2, 1, 5, 32), torch.randn(2, 1, 32)
    want = Block.forward(blk, torch.cat([cls, x[:, 0]], dim=1))
    got_x, got_cls = blk(x, cls)
    torch.testing.assert_close(torch.cat([got_cls, got_x[:, 0]], dim=1), want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("attention", ["divided", "joint"])
def test_every_parameter_gets_a_gradient(attention):
    enc = make(attention=attention, tubelet_size=2, layer_scale=1.0)
    video = torch.randn(2, 3, 4, 32, 32)
    weights = torch.randn(2, 1 + 2 * 16, 32)

    def step() -> dict[str, torch.Tensor]:
        enc.zero_grad()
        out = enc(video)
        (out.tokens * weights).sum().backward()
        return {n: p.grad for n, p in enc.named_parameters()}

    grads = step()
    assert [n for n, g in grads.items() if g is None] == []
    zero = {n for n, g in grads.items() if not g.any()}
    # the zero output projection blocks the gradient to the rest of the temporal branch, but not its own
    assert all(".temporal_attn.proj." not in n for n in zero)
    assert zero <= {n for n, _ in enc.named_temporal_parameters()}
    with torch.no_grad():
        for p in enc.parameters():
            p -= 0.1 * p.grad
    zero = {n for n, g in step().items() if not g.any()}
    assert zero == set()  # one step later the whole temporal branch learns


def test_gradient_checkpointing_gives_same_outputs_and_grads():
    enc = make(drop_path=0.0)
    randomise_temporal(enc)
    video = torch.randn(2, 3, 4, 32, 32)
    results = []
    for enable in (False, True):
        enc.set_grad_checkpointing(enable)
        enc.zero_grad()
        out = enc(video)
        (out.tokens.square().mean() + out.pooled.sum()).backward()
        results.append((out.tokens.detach(), {n: p.grad.clone() for n, p in enc.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, msg=name)


@pytest.mark.parametrize("frames", [2, 6, 8])
def test_frame_counts_other_than_configured(frames):
    enc = make(tubelet_size=2, num_frames=4)
    randomise_temporal(enc)
    out = enc(torch.randn(1, 3, frames, 32, 32))
    assert out.frames.shape == (1, frames // 2, 32)
    assert torch.isfinite(out.tokens).all()


def test_temporal_and_spatial_resampling():
    pos = torch.randn(1, 4, 8)
    assert resample_temporal(pos, 4) is pos
    ramp = torch.arange(4.0).view(1, 4, 1)  # half-pixel linear interpolation of a ramp
    want = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]).view(1, 8, 1)
    torch.testing.assert_close(resample_temporal(ramp, 8), want)
    torch.testing.assert_close(resample_temporal(torch.ones(1, 4, 3), 3), torch.ones(1, 3, 3))
    timm_layers = pytest.importorskip("timm.layers")
    grid = torch.randn(1, 16, 8)
    want = timm_layers.resample_abs_pos_embed(grid, new_size=[6, 5], old_size=[4, 4], num_prefix_tokens=0)
    torch.testing.assert_close(resample_spatial(grid, (4, 4), (6, 5)), want)


def test_other_image_sizes_resample_the_position_embedding():
    enc = make()
    out = enc(torch.randn(1, 3, 2, 48, 40))
    assert out.tokens.shape == (1, 1 + 2 * 6 * 5, 32)


def test_shape_errors_name_the_numbers():
    enc = make(tubelet_size=3, num_frames=6)
    with pytest.raises(ValueError, match="16 frames are not divisible by tubelet_size 3"):
        enc(torch.randn(1, 3, 16, 32, 32))
    embed = PatchEmbed3D(patch_size=16, tubelet_size=1, in_chans=3, dim=8)
    with pytest.raises(ValueError, match="image size 100 is not divisible by patch size 16"):
        embed(torch.randn(1, 3, 1, 100, 96))
    with pytest.raises(ValueError, match="expected 3 channels, got 1"):
        embed(torch.randn(1, 1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(3, 32, 32\)"):
        enc(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="6 frames are not divisible by tubelet_size 4"):
        make(tubelet_size=4, num_frames=6)
    with pytest.raises(ConfigError, match="set pool: mean"):
        make(class_token=False)
    with pytest.raises(ConfigError, match="attention is 'space'"):
        make(attention="space")


def test_interface_no_weight_decay_lock_and_temporal_parameters():
    enc = make()
    nwd = enc.no_weight_decay()
    assert {"cls_token", "pos_embed", "temporal_embed", "norm.weight", "blocks.0.attn.qkv.bias"} <= nwd
    assert not any(n.endswith("qkv.weight") or n.endswith("fc1.weight") for n in nwd)
    temporal = {n for n, _ in enc.named_temporal_parameters()}
    assert "temporal_embed" in temporal and "blocks.1.temporal_attn.proj.weight" in temporal
    assert all(n == "temporal_embed" or ".temporal_" in n for n in temporal)
    assert len(list(enc.temporal_parameters())) == len(temporal)
    assert {n for n, _ in make(attention="joint").named_temporal_parameters()} == {"temporal_embed"}

    enc.lock(unlocked_groups=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.1.", "norm.")) for n in trainable)
    enc.lock()
    assert not any(p.requires_grad for p in enc.parameters())
    enc.lock(unlocked_groups=10)
    assert all(p.requires_grad for p in enc.parameters())


def test_drop_path_drops_whole_samples_in_training_only():
    enc = make(drop_path=0.5)
    video = torch.randn(2, 3, 4, 32, 32)
    enc.eval()
    torch.testing.assert_close(enc(video).tokens, enc(video).tokens)
    enc.train()
    torch.manual_seed(1)
    a = enc(video).tokens
    torch.manual_seed(2)
    assert not torch.allclose(a, enc(video).tokens)


def test_autocast_bf16():
    enc = make().eval()
    randomise_temporal(enc)
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = enc(video)
    assert torch.isfinite(low.tokens.float()).all()
    torch.testing.assert_close(low.pooled.float(), enc(video).pooled, atol=0.1, rtol=0.05)


def test_layer_types_are_plain_modules():
    enc = make(qk_norm=True, act="quick_gelu", pre_norm=True)
    assert isinstance(enc.blocks[0].attn.q_norm, nn.LayerNorm)
    assert enc.patch_embed.proj.bias is None  # CLIP-style towers have no patch bias
    assert torch.isfinite(enc(torch.randn(1, 3, 4, 32, 32)).pooled).all()


def test_benchmark_script_runs_at_a_tiny_size():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_encoder.py"
    spec = importlib.util.spec_from_file_location("bench_encoder", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sizes = ["--width", "32", "--depth", "1", "--heads", "2", "--frames", "2", "--size", "32", "--batch", "1"]
    threads = torch.get_num_threads()
    try:
        out = bench.main(
            [*sizes, "--repeats", "1", "--warmup", "0", "--no-memory", "--threads", str(threads)]
        )
    finally:
        torch.set_num_threads(threads)
    assert set(out["ms"]) == {f"{m}{c}" for m in bench.MODELS for c in ("", "+ckpt")}
    assert out["gflop"]["videovl"] > out["gflop"]["timm-frames"] > 0
    assert out["saved_mib"]["videovl+ckpt"] < out["saved_mib"]["videovl"]


@pytest.mark.parametrize("mode", ["mean", "previous"])
def test_residual_frames_see_what_moves_and_leave_stills_alone(mode):
    enc = make(tubelet_size=2, residual_frames=mode).eval()
    randomise_temporal(enc)
    assert enc.patch_embed.proj.weight.shape[1] == 6  # RGB, then RGB minus the mean or the previous frame
    img = torch.randn(2, 3, 32, 32)
    still = img.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    moving = torch.randn(2, 3, 4, 32, 32)
    before = {"img": enc(img).tokens, "still": enc(still).tokens, "moving": enc(moving).tokens}
    with torch.no_grad():  # the kernel's residual half: what stands still gives it zeros
        enc.patch_embed.proj.weight[:, 3:].normal_(0, 1.0)
    torch.testing.assert_close(enc(img).tokens, before["img"])
    torch.testing.assert_close(enc(still).tokens, before["still"])
    assert not torch.allclose(enc(moving).tokens, before["moving"], atol=1e-3)
    # the residual is taken over the clip's frames: shifting every frame by one value changes nothing in it
    with torch.no_grad():
        enc.patch_embed.proj.weight[:, :3] = 0.0
    torch.testing.assert_close(enc(moving + 0.7).tokens, enc(moving).tokens)
    masked = enc(moving, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert masked.tokens.shape == (2, 1 + 2 * 8, 32)  # token dropping draws from the input's shape
    with pytest.raises(ValueError, match="expected 3 channels, got 6"):
        enc(torch.randn(1, 6, 4, 32, 32))


def test_residual_frames_refuse_pretrained_weights():
    with pytest.raises(ConfigError, match="residual_frames needs a patch embedding built from scratch"):
        make(residual_frames="mean", timm_model="vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match="residual_frames needs"):
        make(residual_frames="previous", pretrained="/models/videomae")
    wrong = r"model.vision.residual_frames is True; expected one of .*previous"
    with pytest.raises(ConfigError, match=wrong):
        make(residual_frames=True)  # a VisionConfig built in Python: the words are checked all the same
    with pytest.raises(ConfigError, match=wrong):
        videovl.create_model("test", vision={"residual_frames": True})  # as loaded, the value as written


def test_residual_frames_previous_is_the_step_from_the_frame_before():
    enc = make(residual_frames="previous").eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    res = enc._residual(clip)
    torch.testing.assert_close(res[:, :3], clip)
    torch.testing.assert_close(res[:, 3:, 0], torch.zeros_like(clip[:, :, 0]))
    torch.testing.assert_close(res[:, 3:, 1:], clip[:, :, 1:] - clip[:, :, :-1])
    # played backwards, every step changes sign (the mean residual would not see the direction)
    back = enc._residual(clip.flip(2))
    torch.testing.assert_close(back[:, 3:, 1:], -res[:, 3:, 1:].flip(2))
    mean = make(residual_frames="mean").eval()._residual(clip)
    torch.testing.assert_close(mean[:, 3:], clip - clip.mean(dim=2, keepdim=True))


def test_fan_in_init_gives_a_narrow_tower_its_default_scale_and_keeps_time_off():
    vit, fan_in = make(width=128, heads=4), make(width=128, heads=4, init="fan_in")
    for enc, std in ((vit, 0.02), (fan_in, 1 / (3 * 128) ** 0.5)):
        qkv = enc.blocks[0].attn.qkv.weight
        assert abs(qkv.std().item() - std) < 0.1 * std
        fc2 = enc.blocks[0].mlp.fc2.weight  # fan-in 512: half the scale of the 128-wide layers'
        assert abs(fc2.std().item() - min(std, 1 / (3 * 512) ** 0.5)) < 0.1 * std
        proj = enc.blocks[0].temporal_attn.proj
        assert not proj.weight.any() and not proj.bias.any()  # time starts off either way
    with pytest.raises(ConfigError, match=r"model.vision.init is 'xavier'; expected one of .*fan_in"):
        make(init="xavier")
