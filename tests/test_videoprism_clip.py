"""VideoPrism's video-text model (a transformers VideoPrismClipModel folder, the LVT checkpoints) as
``model.pretrained``: both towers and the joint space against transformers' own model on a tiny random
config (video embeddings through the joint layers and VideoPrism's pooling head, text embeddings from its
appended class token, the softmax scores with no temperature); token dropping, a checkpoint round trip and
a 2-step pretraining from the folder."""

import dataclasses

import pytest
import torch
from einops import rearrange
from tiny_checkpoints import write_tiny_videoprism

import videovl
from videovl.config import ConfigError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_videoprism(tmp_path_factory.mktemp("videoprism") / "lvt", "clip")


@pytest.fixture(scope="module")
def reference(folder):
    from transformers import VideoPrismClipModel

    return VideoPrismClipModel.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def batch(folder):
    torch.manual_seed(0)
    tokens = videovl.get_tokenizer(str(folder))(
        ["a cat sat on the mat", "two dogs", "the digit 3 moves left"]
    )
    return torch.randn(2, 3, 4, 16, 16), tokens["input_ids"], tokens["attention_mask"]


def _model(folder, **overrides):
    return videovl.create_model({"name": "clip", "pretrained": str(folder), **overrides}).eval()


def _frames(x):
    return rearrange(x, "b c t h w -> b t c h w")


@torch.no_grad()
def test_videoprism_clip_folder_equals_transformers(folder, reference, batch):
    videos, ids, mask = batch
    assert not bool(mask.all())  # padding: the class token must see the caption, not the pads
    model = _model(folder)
    v = model.cfg.vision
    assert (v.attention, v.temporal_depth, v.joint_depth, v.pool) == ("factorised", 2, 1, "map")
    assert (v.map_width, v.map_mlp, v.map_query_scale) == (64, False, True)
    assert model.cfg.text.pool == "eot" and not model.cfg.learn_temperature
    out = model(videos, ids, mask)
    theirs = reference(pixel_values_videos=_frames(videos), input_ids=ids, attention_mask=mask)
    video, text = out.video_features.clip, out.text_features.sentence
    diffs = {
        "video": (video - theirs.video_embeds).abs().max().item(),
        "text": (text - theirs.text_embeds).abs().max().item(),
    }
    torch.testing.assert_close(video, theirs.video_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(text, theirs.text_embeds, rtol=0, atol=1e-5)
    # VideoPrism's "logits" are softmaxes of the plain cosines over the videos: for each text
    # (logits_per_video, videos x texts), and of the transpose over its rows (logits_per_text)
    logits = out.logit_scale * text @ video.T + out.logit_bias  # (texts, videos), scale 1
    assert float(out.logit_scale) == 1.0
    pairs = ((logits.softmax(1).T, theirs.logits_per_video), (logits.softmax(0), theirs.logits_per_text))
    for ours, expected in pairs:
        diffs["scores"] = max(diffs.get("scores", 0.0), (ours - expected).abs().max().item())
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    print("videoprism clip max abs diff", diffs)
    # unnormalised, the video embedding is the head's normed output; the tokens, the joint layers'
    video_model = reference.video_model(pixel_values_videos=_frames(videos))
    raw = model.encode_video(videos, normalize=False)
    torch.testing.assert_close(raw.tokens, video_model.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        torch.nn.functional.normalize(raw.clip, dim=-1), video_model.pooler_output[:, 0], rtol=0, atol=1e-5
    )
    # every weight came from the folder: the temporal blocks too (a video model's, not built from images)
    names = {n for n, _ in model.named_parameters()}
    assert names == set(model.pretrained_params)
    assert "logit_scale" not in names and "logit_scale" in model.state_dict()


@torch.no_grad()
def test_padding_does_not_change_the_text_embedding(folder, batch):
    _, ids, mask = batch
    model = _model(folder)
    n = int(mask[1].sum())  # "two dogs": padded to the batch's longest caption, and alone
    assert n < ids.shape[1]
    alone = model.encode_text(ids[1:2, :n], mask[1:2, :n]).sentence
    torch.testing.assert_close(model.encode_text(ids, mask).sentence[1:2], alone, rtol=0, atol=1e-6)


@torch.no_grad()
def test_frames_pool_each_frame_through_the_head(folder, batch):
    videos = batch[0]
    model = _model(folder)
    out = model.visual(videos)
    each = rearrange(out.tokens, "b (t n) d -> b t n d", t=4)
    torch.testing.assert_close(out.frames, model.visual.attn_pool(each), rtol=0, atol=1e-6)
    assert model.encode_video(videos).frames.shape == (2, 4, 32)


def test_token_dropping_checkpointing_and_lock_on_the_converted_tower(folder):
    model = _model(folder).train()
    videos = torch.randn(2, 3, 4, 16, 16)
    out = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(1))
    assert out.frames.shape == (2, 4, 32) and out.tokens.shape == (2, 4 * 2, 32)  # 2 of 4 tokens a frame
    assert torch.isfinite(out.clip).all()
    out.clip.sum().backward()
    assert all(p.grad is not None for p in model.visual.parameters())
    model.zero_grad()
    plain = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    model.visual.set_grad_checkpointing(True)
    again = model.encode_video(videos, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).clip
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-6)
    # lock(): the joint blocks are the last groups, the first with the norm before it, the last with the head
    model.visual.lock(unlocked_groups=1)
    trainable = {n.split(".")[0] for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable == {"norm", "joint_blocks", "attn_pool"}
    model.visual.lock(unlocked_groups=2)
    trainable = {".".join(n.split(".")[:2]) for n, p in model.visual.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("temporal")} == {"temporal_blocks.1"}
    # stage freeze [temporal]: the temporal stage, not the joint blocks
    temporal = {n for n, _ in model.visual.named_temporal_parameters()}
    assert "temporal_blocks.1.attn.qkv.weight" in temporal and not any(
        n.startswith("joint") for n in temporal
    )


def test_the_api_takes_the_folder_and_a_checkpoint_rebuilds_it(folder, batch, test_video, tmp_path):
    videos, ids, mask = batch
    model, _, evaluate = videovl.create_model_and_transforms(folder)
    assert model.cfg.name == "clip" and model.cfg.vision.joint_depth == 1
    assert evaluate(test_video).shape == (3, 4, 16, 16)
    cfg = videovl.load_config(overrides=["model.name=clip", f"model.pretrained={folder}"])
    videovl.save_checkpoint(model, cfg, tmp_path / "ckpt")
    again, _ = videovl.load_checkpoint(tmp_path / "ckpt")
    assert again.cfg.vision == model.cfg.vision and not again.cfg.learn_temperature
    with torch.no_grad():
        before, after = model(videos, ids, mask), again.eval()(videos, ids, mask)
    torch.testing.assert_close(after.video_features.clip, before.video_features.clip, rtol=0, atol=0)
    torch.testing.assert_close(after.text_features.sentence, before.text_features.sentence, rtol=0, atol=0)
    assert float(after.logit_scale) == 1.0


def test_videoprism_clip_options_are_checked(folder):
    with pytest.raises(ConfigError, match="joint_depth is 1.*attention: factorised"):
        videovl.create_model({"name": "test", "vision": {"joint_depth": 1}})
    with pytest.raises(ConfigError, match="map_width / map_mlp / map_query_scale.*pool: map"):
        videovl.create_model({"name": "test", "vision": {"pool": "mean", "map_mlp": False}})
    with pytest.raises(ConfigError, match="map_width 30 is not divisible"):
        videovl.create_model({"name": "test", "vision": {"pool": "map", "map_width": 30, "heads": 4}})


def test_pretraining_from_the_videoprism_clip_folder_keeps_its_scale(folder, tiny_demo, tmp_path):
    from tools import pretrain

    run = tmp_path / "run"
    metrics = pretrain.main(
        [
            "model.name=clip",
            f"model.pretrained={folder}",
            "data.demo=false",
            f"data.demo_root={tiny_demo}",
            f"train.output_dir={run}",
            "data.num_workers=0",
            "data.batch_size=8",
            "data.image_size=16",
            "data.num_frames=4",
            "train.tracker=null",
            "train.mixed_precision=no",
            "eval.batch_size=16",
            "stages.0.steps=1",
            "stages.1.steps=2",
            "stages.2.steps=0",
            "stages.3.steps=0",
            "stages.0.warmup_steps=1",
            "stages.1.warmup_steps=1",
            "stages.1.losses.caption=0",  # the "clip" size has no caption decoder
        ]
    )
    assert "test/t2v/R@1" in metrics
    trained, _ = videovl.load_checkpoint(run / "model")
    assert float(trained.logit_scale) == 0.0  # the fixed scale: never trained
    start = dict(_model(folder).named_parameters())
    moved = [n for n, p in trained.named_parameters() if n in start and not torch.equal(p, start[n])]
    assert any(n.startswith("visual.joint_blocks") for n in moved)  # (the demo recipe freezes the text tower)
    assert trained.cfg.vision == dataclasses.replace(_model(folder).cfg.vision, pretrained=None)
