"""Token dropping: the kept-index draw, masked encoder outputs in both attention modes, gradients of a
masked step, eval mode that never masks, config errors, and resume exactness with masking on."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

import videovl
from tests.conftest import tiny_pretrain_args
from tests.test_pretrain_task import ALL, make_batch, make_model
from tools import pretrain as tool
from videovl.config import ConfigError, MaskRatio, StageConfig, VisionConfig, from_dict, load_config
from videovl.data.tokenizer import load_tokenizer
from videovl.models.layers import gather_kept, keep_indices, num_kept
from videovl.models.visual import VisualEncoder
from videovl.tasks.pretrain import PretrainTask
from videovl.train.stages import check_masking, masking_args

TINY = VisionConfig(image_size=32, patch_size=8, num_frames=4, width=32, depth=2, heads=2)  # 4x4 grid

pytestmark = pytest.mark.usefixtures("one_thread")


def make(**overrides) -> VisualEncoder:
    torch.manual_seed(0)
    return VisualEncoder(dataclasses.replace(TINY, **overrides))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- the draw


@pytest.mark.parametrize("tube", [True, False])
def test_kept_indices_are_sorted_distinct_and_tube_masking_keeps_one_set_for_all_frames(tube):
    idx = keep_indices(3, 4, 16, 0.75, gen(), tube)
    assert idx.shape == (3, 4, 4)
    assert (idx.diff(dim=-1) > 0).all() and idx.min() >= 0 and idx.max() < 16
    same = (idx == idx[:, :1]).all(dim=-1)  # (B, T): frame t kept what frame 0 kept
    assert same.all() if tube else not same[:, 1:].all()
    assert not (idx[0] == idx[1]).all()  # each clip draws its own positions
    torch.testing.assert_close(idx, keep_indices(3, 4, 16, 0.75, gen(), tube), rtol=0, atol=0)


def test_kept_count_is_floor_of_the_kept_share():
    assert [num_kept(196, r) for r in (0.0, 0.5, 0.75, 0.9)] == [196, 98, 49, 19]
    assert num_kept(16, 0.95) == 0
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        num_kept(16, 1.0)


# ------------------------------------------------------------------------------------------ the encoder


@pytest.mark.parametrize("attention", ["divided", "joint"])
@pytest.mark.parametrize("tubelet", [1, 2])
def test_masked_shapes_for_images_and_videos(attention, tubelet):
    enc = make(attention=attention, tubelet_size=tubelet)
    for x, t, ratio, keep in (
        (torch.randn(2, 3, 32, 32), 1, 0.5, 8),
        (torch.randn(2, 3, 4, 32, 32), 4 // tubelet, 0.75, 4),
    ):
        out = enc(x, mask_ratio=ratio, generator=gen())
        assert out.pooled.shape == (2, 32) and out.frames.shape == (2, t, 32)
        assert out.tokens.shape == (2, 1 + t * keep, 32)
        assert out.kept.shape == (2, t, keep)
        assert torch.isfinite(out.tokens).all()
        assert enc(x).kept is None and enc(x).tokens.shape == (2, 1 + t * 16, 32)


@pytest.mark.parametrize("attention", ["divided", "joint"])
def test_kept_tokens_keep_their_positions_and_the_class_token_survives(attention):
    # With no blocks the output is the normed embedding: the masked run must hold exactly the unmasked
    # run's class token and its patch tokens at the kept indices (positions were added before dropping).
    enc = make(attention=attention, depth=0).eval()
    with torch.no_grad():
        enc.temporal_embed.normal_(0, 0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    full, masked = enc(x), enc(x, mask_ratio=0.75, generator=gen(1))
    torch.testing.assert_close(masked.tokens[:, 0], full.tokens[:, 0])  # the class token, never dropped
    patches = full.tokens[:, 1:].reshape(2, 4, 16, 32)
    kept = gather_kept(patches, masked.kept)
    torch.testing.assert_close(masked.tokens[:, 1:], kept.flatten(1, 2))
    torch.testing.assert_close(masked.frames, kept.mean(dim=2))  # frame features from the kept tokens
    tube = (masked.kept == masked.kept[:, :1]).all()
    assert tube if attention == "divided" else not tube


def test_joint_attention_takes_tube_masking_as_an_option_and_divided_refuses_anything_else():
    out = make(attention="joint")(torch.randn(2, 3, 4, 32, 32), mask_ratio=0.5, generator=gen(), tube=True)
    assert (out.kept == out.kept[:, :1]).all()
    with pytest.raises(ConfigError, match="needs model.vision.attention: joint"):
        make(attention="divided")(torch.randn(2, 3, 4, 32, 32), mask_ratio=0.5, generator=gen(), tube=False)


# --------------------------------------------------------------------------------- model and task


def test_a_model_in_eval_mode_sees_every_token():
    model = videovl.create_model(videovl.model_config("test", caption={"enabled": False}))
    x = torch.randn(2, 3, 4, 32, 32)
    masked = model.train().encode_video(x, mask_ratio=0.75, generator=gen())
    assert masked.tokens.shape[1] == 1 + 4 * 4
    model.eval()
    with torch.no_grad():
        evaluated = model.encode_video(x, mask_ratio=0.75, generator=gen())
        full = model.encode_video(x)
    assert evaluated.tokens.shape[1] == 1 + 4 * 16
    torch.testing.assert_close(evaluated.clip, full.clip, rtol=0, atol=0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(videovl.model_config("test").text)


@pytest.mark.parametrize("attention", ["divided", "joint"])
@pytest.mark.parametrize("frames", [4, 1])
def test_a_masked_step_reaches_every_trained_parameter(tokenizer, attention, frames):
    model = make_model(tokenizer, vision={"attention": attention})
    task = PretrainTask(model)
    batch = make_batch(tokenizer, frames=frames)  # images arrive as one-frame clips
    masking = {"mask_ratio": 0.75 if frames > 1 else 0.5, "generator": gen(), "mask_tube": None}
    out = task(batch, ALL, masking=masking)
    out["loss"].backward()
    assert {"contrastive_loss", "itm_loss", "caption_loss"} <= out.keys()
    untouched = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()}
    # an image has no time: only the temporal parameters (divided attention's branch) stay untouched
    temporal = {f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()}
    assert untouched == (set() if frames > 1 else temporal)


# ------------------------------------------------------------------------------------------- config


def test_a_stage_takes_one_ratio_or_one_per_modality():
    assert from_dict(StageConfig, {"mask_ratio": 0.75}).mask_ratio == MaskRatio(0.75, 0.75)
    assert from_dict(StageConfig, {"mask_ratio": 0}).mask_ratio == MaskRatio(0.0, 0.0)
    stage = from_dict(StageConfig, {"mask_ratio": {"video": 0.75, "image": 0.5}})
    assert stage.mask_ratio == MaskRatio(video=0.75, image=0.5)
    cfg = load_config("configs/demo.yaml", ["stages.1.mask_ratio.image=0.25"])
    assert cfg.stages[1].mask_ratio.image == 0.25


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_a_ratio_outside_zero_one_names_the_stage_and_value(ratio):
    with pytest.raises(
        ConfigError, match=f"stage 'joint': mask_ratio.video is {ratio}; expected .* \\[0, 1\\)"
    ):
        from_dict(StageConfig, {"name": "joint", "mask_ratio": {"video": ratio}})


def test_a_ratio_that_keeps_no_token_or_an_encoder_that_cannot_mask_is_a_config_error():
    enc = make()
    check_masking(enc, StageConfig(name="ok", mask_ratio=0.9), 0, 32)  # keeps 1 of 16
    with pytest.raises(ConfigError, match=r"stages.1 \('joint'\): mask_ratio.image is 0.95, which keeps no"):
        check_masking(enc, StageConfig(name="joint", mask_ratio=MaskRatio(video=0.5, image=0.95)), 1, 32)
    with pytest.raises(ConfigError, match=r"stages.0 \('s'\): token dropping without tube masking needs"):
        check_masking(enc, StageConfig(name="s", mask_ratio=0.5, mask_tube=False), 0, 32)
    check_masking(make(attention="joint"), StageConfig(name="s", mask_ratio=0.5, mask_tube=False), 0, 32)


def test_masking_draws_from_seed_step_micro_step_and_rank():
    stage = StageConfig(mask_ratio=MaskRatio(video=0.75))
    assert masking_args(stage, "image", 0, 5, 0, 0) == {}

    def draw(*key):
        return keep_indices(2, 4, 16, 0.75, masking_args(stage, "video", *key)["generator"], True)

    assert torch.equal(draw(0, 5, 0, 0), draw(0, 5, 0, 0))
    for other in ((1, 5, 0, 0), (0, 6, 0, 0), (0, 5, 1, 0), (0, 5, 0, 1)):
        assert not torch.equal(draw(0, 5, 0, 0), draw(*other))


def test_resume_with_masking_gives_the_same_weights_as_a_straight_run(tiny_demo, tmp_path):
    common = [
        "stages=[{name: joint, steps: 4, warmup_steps: 1, video_ratio: 0.5, "
        "mask_ratio: {video: 0.75, image: 0.5}, sources: "
        "[{manifest: 'demo:video_train.jsonl', kind: video-text}, "
        "{manifest: 'demo:image_train.jsonl', kind: image-text}], "
        "losses: {contrastive: 1.0, frame: 0.5, itm: 0.5, caption: 0.2}}]",
        "data.val_manifest=null",
        "data.val_image_manifest=null",
        "data.test_manifest=null",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    tool.main(tiny_pretrain_args(tiny_demo, straight, *common))
    tool.main(tiny_pretrain_args(tiny_demo, resumed, *common, "--stop-after-steps", "2"))
    tool.main(tiny_pretrain_args(tiny_demo, resumed, *common, "--resume", "latest"))
    a = load_file(str(straight / "checkpoints" / "step_00000004" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    # and the masking did happen: an unmasked straight run ends elsewhere
    unmasked = tmp_path / "unmasked"
    tool.main(
        tiny_pretrain_args(
            tiny_demo, unmasked, *[c.replace("video: 0.75, image: 0.5", "video: 0, image: 0") for c in common]
        )
    )
    c = load_file(str(unmasked / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("model.visual."))
