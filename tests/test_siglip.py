"""SigLIP checkpoints in (a transformers SiglipModel folder) against transformers' own model on a tiny random
config: image features through the MAP head, text features, sigmoid logits with the learnt bias; and a
2-step pretraining and a 2-step retrieval fine-tuning from the folder with the sigmoid loss, whose first
logits are SigLIP's own."""

import pytest
import torch
from tiny_checkpoints import clip_tokenizer, write_tiny_siglip

import videovl
from videovl.config import ConfigError


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return write_tiny_siglip(tmp_path_factory.mktemp("siglip") / "siglip")


@pytest.fixture(scope="module")
def reference(siglip_dir):
    from transformers import SiglipModel

    return SiglipModel.from_pretrained(siglip_dir).eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    tokens = clip_tokenizer()(
        ["a cat sat on the mat", "two dogs", "the digit 3 moves left"],
        padding="max_length",
        max_length=16,
        truncation=True,
        return_tensors="pt",
    )
    return torch.randn(3, 3, 32, 32), tokens["input_ids"], tokens["attention_mask"]


def _siglip(siglip_dir, **vision):
    return videovl.create_model({"name": "clip", "pretrained": str(siglip_dir), "vision": vision}).eval()


@torch.no_grad()
def test_siglip_folder_equals_transformers_siglip(siglip_dir, reference, batch):
    images, ids, mask = batch
    model = _siglip(siglip_dir)
    v = model.cfg.vision
    assert (v.class_token, v.pool, v.pre_norm, v.act) == (False, "map", False, "gelu_tanh")
    assert model.cfg.contrastive_loss == "sigmoid" and model.cfg.text.pool == "eot"
    image = model.encode_video(images, normalize=False).clip
    text = model.encode_text(ids, mask, normalize=False).sentence
    expected_image = reference.get_image_features(pixel_values=images).pooler_output
    expected_text = reference.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(image, expected_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(text, expected_text, rtol=0, atol=1e-5)
    out = model(images, ids, mask)
    video = out.video_features
    logits = out.logit_scale * out.text_features.sentence @ video.clip.T + out.logit_bias  # scale ~121
    expected = reference(pixel_values=images, input_ids=ids, attention_mask=mask).logits_per_text
    # logits of ~30 after a scale of ~121: float32 rounds them at ~4e-6 apart, hence the relative term
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-5)
    # one frame's feature is the image's: the MAP head pools each frame as it pools an image
    torch.testing.assert_close(model.encode_video(images).frames[:, 0], video.clip, rtol=0, atol=1e-6)
    names = {n for n, _ in model.named_parameters()}
    assert names - model.pretrained_params == {
        f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()
    }


@torch.no_grad()
def test_a_siglip_clip_of_one_repeated_image_scores_as_the_image(siglip_dir, batch):
    images, ids, mask = batch
    model = _siglip(siglip_dir, num_frames=4, attention="divided")
    text = model.encode_text(ids, mask).sentence
    image = model.encode_video(images).clip
    clip = model.encode_video(images.unsqueeze(2).expand(-1, -1, 4, -1, -1)).clip
    # the MAP head attends over 4 copies of each patch: the same softmax weights, the same pooled token
    torch.testing.assert_close(clip @ text.T, image @ text.T, rtol=0, atol=1e-5)


def test_masked_tokens_and_frames_run_through_the_map_head(siglip_dir):
    model = _siglip(siglip_dir, num_frames=4).train()
    out = model.encode_video(torch.randn(2, 3, 4, 32, 32), mask_ratio=0.5, generator=torch.Generator())
    assert out.clip.shape == (2, 32) and out.frames.shape == (2, 4, 32) and torch.isfinite(out.clip).all()


def test_a_siglip2_naflex_folder_is_an_error_that_says_which_siglip2_fits(tmp_path):
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "config.json").write_text('{"model_type": "siglip2"}')
    with pytest.raises(ConfigError, match="NaFlex.*fixed-resolution.*model_type 'siglip'"):
        videovl.create_model({"name": "clip", "pretrained": str(tmp_path / "s2")})


def _record_first_step(monkeypatch) -> dict:
    """Patches the task and the sigmoid loss to keep the first batch and the first logits they see."""
    from videovl.losses.sigmoid import SigmoidContrastiveLoss
    from videovl.tasks.pretrain import PretrainTask

    seen = {}
    task_forward, loss_forward = PretrainTask.forward, SigmoidContrastiveLoss.forward

    def record_batch(self, batch, weights, masking=None):
        seen.setdefault("batch", {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
        return task_forward(self, batch, weights, masking)

    def record_logits(self, video, text, scale, bias, **kwargs):
        with torch.no_grad():
            seen.setdefault("logits", scale * text @ video.t() + bias)
        return loss_forward(self, video, text, scale, bias, **kwargs)

    monkeypatch.setattr(PretrainTask, "forward", record_batch)
    monkeypatch.setattr(SigmoidContrastiveLoss, "forward", record_logits)
    return seen


def _assert_siglips_logits(siglip_dir, seen) -> None:
    from transformers import SiglipModel

    reference = SiglipModel.from_pretrained(siglip_dir).eval()
    batch = seen["batch"]
    assert batch["pixels"].shape[2] == 1  # images: SigLIP's own input
    with torch.no_grad():
        out = reference(
            pixel_values=batch["pixels"][:, :, 0],
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
        )
    # as the CLIP recipe's check: a training-mode forward of logits ~30 (scale ~121) agrees to ~2.5e-5
    torch.testing.assert_close(seen["logits"], out.logits_per_text, rtol=0, atol=1e-4)


TINY_RUN = [
    "data.num_workers=0",
    "data.batch_size=8",
    "train.tracker=null",
    "train.mixed_precision=no",
    "eval.batch_size=16",
]


def test_pretraining_from_siglip_with_the_sigmoid_loss_starts_from_siglips_logits(
    siglip_dir, tiny_demo, tmp_path, monkeypatch
):
    from tools import pretrain

    seen = _record_first_step(monkeypatch)
    metrics = pretrain.main(
        [
            "model.name=clip",
            f"model.pretrained={siglip_dir}",
            "data.demo=false",
            f"data.demo_root={tiny_demo}",
            "data.image_size=32",  # the tiny SigLIP's
            f"train.output_dir={tmp_path / 'run'}",
            *TINY_RUN,
            "stages.0.steps=2",
            "stages.1.steps=0",
            "stages.2.steps=0",
            "stages.3.steps=0",
            "stages.0.warmup_steps=1",
        ]
    )
    assert "test/t2v/R@1" in metrics
    _assert_siglips_logits(siglip_dir, seen)


def test_retrieval_fine_tuning_from_siglip_with_the_sigmoid_loss_starts_from_siglips_logits(
    siglip_dir, tiny_demo, tmp_path, monkeypatch
):
    """tools/finetune.py --checkpoint on the folder itself: the fine-tune trains with SigLIP's loss, and its
    first step (on image-text pairs, so that SigLIP's own model takes the same batch) scores as SigLIP."""
    from tools import finetune

    seen = _record_first_step(monkeypatch)
    metrics = finetune.main(
        [
            "--task", "retrieval", "--checkpoint", str(siglip_dir),
            "--config", "configs/finetune_retrieval.yaml",
            "data.demo=false", f"data.demo_root={tiny_demo}", f"train.output_dir={tmp_path / 'ft'}",
            *TINY_RUN,
            "stages.0.steps=2", "stages.0.warmup_steps=1",
            "stages.0.sources=[{manifest: 'demo:image_train.jsonl', kind: image-text}]",
            "stages.0.losses={contrastive: 1.0}",
        ]
    )  # fmt: skip
    assert "test/t2v/R@1" in metrics
    assert (tmp_path / "ft" / "model").is_dir()
    _assert_siglips_logits(siglip_dir, seen)
