"""Runs that start from a tiny CLIP folder: 2 pretraining steps, 2 fine-tuning steps with the CLIP4Clip
recipe, a zero-shot evaluation; the first step's contrastive logits are CLIP's own for the same batch."""

from pathlib import Path

import pytest
import torch
from tiny_checkpoints import write_tiny_clip

from tools import evaluate, finetune, pretrain
from videovl.losses.contrastive import ContrastiveLoss
from videovl.tasks.pretrain import PretrainTask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture
def first_step(monkeypatch):
    """The first training batch and the contrastive logits computed on it."""
    seen = {}
    task_forward, loss_forward = PretrainTask.forward, ContrastiveLoss.forward

    def record_batch(self, batch, weights, masking=None):
        seen.setdefault("batch", {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
        return task_forward(self, batch, weights, masking)

    def record_logits(self, *args, **kwargs):
        out = loss_forward(self, *args, **kwargs)
        seen.setdefault("logits_t2v", out["logits_t2v"].clone())
        return out

    monkeypatch.setattr(PretrainTask, "forward", record_batch)
    monkeypatch.setattr(ContrastiveLoss, "forward", record_logits)
    return seen


def _assert_clip_logits(clip_dir, seen):
    from transformers import CLIPModel

    reference = CLIPModel.from_pretrained(clip_dir).eval()
    batch = seen["batch"]
    pixels = batch["pixels"]
    assert pixels.shape[2] == 1  # images (or one-frame clips): CLIP's own input
    with torch.no_grad():
        out = reference(
            pixel_values=pixels[:, :, 0], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
    torch.testing.assert_close(seen["logits_t2v"], out.logits_per_text, rtol=0, atol=1e-4)


COMMON = [
    "data.num_workers=0",
    "data.batch_size=8",
    "train.tracker=null",
    "train.mixed_precision=no",
    "eval.batch_size=16",
]


def test_pretraining_starts_from_clip_with_its_joint_space(clip_dir, tiny_demo, tmp_path, first_step):
    out = tmp_path / "run"
    metrics = pretrain.main(
        [
            "model.name=clip",
            f"model.pretrained={clip_dir}",
            "data.demo=false",  # read the tiny corpus as it is (true would regenerate it at full size)
            f"data.demo_root={tiny_demo}",
            "data.image_size=32",  # the tiny CLIP's
            f"train.output_dir={out}",
            *COMMON,
            "train.pretrained_lr_scale=0.01",
            "stages.0.steps=2",
            "stages.1.steps=2",
            "stages.2.steps=0",
            "stages.3.steps=0",
            "stages.0.warmup_steps=1",
            "stages.1.warmup_steps=1",
            "stages.1.losses.caption=0",
        ]
    )
    assert "test/t2v/R@1" in metrics
    _assert_clip_logits(clip_dir, first_step)  # stage 0 trains on images
    groups = (out / "optimizer_groups.txt").read_text()
    assert (
        "lr x0.01" in groups
        and "pretrained" in groups
        and "visual.blocks.0.temporal_attn.qkv.weight" in groups
    )


def test_clip4clip_recipe_fine_tunes_a_clip_folder(clip_dir, tiny_demo, tmp_path, first_step):
    out = tmp_path / "ft"
    metrics = finetune.main(
        [
            "--task",
            "retrieval",
            "--checkpoint",
            str(clip_dir),
            "--config",
            str(ROOT / "configs/clip4clip_msrvtt.yaml"),
            "data.demo=false",
            f"data.demo_root={tiny_demo}",
            "data.val_manifest=demo:video_val.jsonl",
            "data.test_manifest=demo:video_test.jsonl",
            "data.image_size=32",
            "data.num_frames=1",
            f"train.output_dir={out}",
            *COMMON,
            "stages.0.steps=2",
            "stages.0.warmup_steps=1",
            "stages.0.sources=[{manifest: 'demo:video_train.jsonl', kind: video-text}]",
            "model.text.max_length=16",
        ]
    )
    assert "test/t2v/R@1" in metrics
    _assert_clip_logits(clip_dir, first_step)  # one-frame clips are images
    lines = (out / "optimizer_groups.txt").read_text().splitlines()
    temporal = [line for line in lines if "temporal_attn" in line]
    assert temporal and all("lr x1," in line and ", new," in line for line in temporal)
    assert any("lr x0.001," in line and "pretrained" in line for line in lines)


def test_zero_shot_clip_baseline(clip_dir, tiny_demo):
    metrics = evaluate.main(
        [
            "--checkpoint",
            str(clip_dir),
            "--task",
            "retrieval",
            "--manifest",
            str(tiny_demo / "video_test.jsonl"),
            "--num-frames",
            "4",
            "--batch-size",
            "8",
            "--num-workers",
            "0",
        ]
    )
    assert 0 <= metrics["t2v/R@1"] <= 100 and not any(k.startswith("rerank/") for k in metrics)


def test_action_fine_tuning_starts_from_a_kinetics_style_videomae_folder(tiny_demo, tmp_path):
    from tiny_checkpoints import write_tiny_video_model

    folder = write_tiny_video_model(
        tmp_path / "k400", "videomae", classifier=True, num_frames=2, image_size=32
    )
    out = tmp_path / "action"
    metrics = finetune.main(
        [
            "--task",
            "action",
            "--checkpoint",
            str(folder),
            "--config",
            str(ROOT / "configs/finetune_action.yaml"),
            "data.demo=false",
            f"data.demo_root={tiny_demo}",
            f"train.output_dir={out}",
            *COMMON,
            "stages.0.steps=2",
            "stages.0.warmup_steps=1",
            "stages.1.steps=2",
            "stages.1.warmup_steps=1",
            "model.alignment.enabled=false",
            "model.caption.enabled=false",
        ]
    )
    assert "test/action/top1" in metrics
    groups = (out / "optimizer_groups.txt").read_text()
    assert "visual.blocks.0.attn.qkv.weight" in groups and "action_head" in groups
