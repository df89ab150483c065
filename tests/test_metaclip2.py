"""MetaCLIP 2 checkpoints in (a transformers MetaClip2Model folder) and out, against transformers' own model
on a tiny random config: CLIP's layout with its own text tower, which pools the first end-of-text id (2)."""

import pytest
import torch
from tiny_checkpoints import METACLIP2_IDS, perturb, write_tiny_metaclip2

import videovl
from videovl.models.export import export_clip


@pytest.fixture(scope="module")
def metaclip2_dir(tmp_path_factory):
    return write_tiny_metaclip2(tmp_path_factory.mktemp("metaclip2") / "metaclip2")


@pytest.fixture(scope="module")
def reference(metaclip2_dir):
    from transformers import MetaClip2Model

    return MetaClip2Model.from_pretrained(metaclip2_dir).eval()


def _batch(vocab: int = 50):
    """Images and right-padded texts as XLM-R writes them: <s> ... </s> <pad>..., end-of-text id 2."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.randint(3, vocab, (3, 12), generator=g)
    ids[:, 0] = METACLIP2_IDS["bos_token_id"]
    for row, end in enumerate((5, 11, 8)):
        ids[row, end] = METACLIP2_IDS["eos_token_id"]
        ids[row, end + 1 :] = METACLIP2_IDS["pad_token_id"]
    mask = (torch.arange(12) <= torch.tensor([[5], [11], [8]])).long()
    return images, ids, mask


def _metaclip2(path, **vision):
    return videovl.create_model({"name": "clip", "pretrained": str(path), "vision": vision}).eval()


@torch.no_grad()
def test_metaclip2_folder_equals_transformers_metaclip2(metaclip2_dir, reference):
    from transformers import MetaClip2TextModel

    images, ids, mask = _batch()
    model = _metaclip2(metaclip2_dir)
    assert isinstance(model.text.model, MetaClip2TextModel)
    assert (model.cfg.vision.act, model.cfg.text.pool, model.cfg.text.max_length) == ("gelu", "eot", 16)
    image = model.encode_video(images, normalize=False).clip
    text = model.encode_text(ids, mask, normalize=False).sentence
    expected_image = reference.get_image_features(pixel_values=images).pooler_output
    expected_text = reference.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(image, expected_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(text, expected_text, rtol=0, atol=1e-5)
    out = model(images, ids, mask)
    logits = out.logit_scale * out.video_features.clip @ out.text_features.sentence.T
    expected = reference(pixel_values=images, input_ids=ids, attention_mask=mask).logits_per_image
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    names = {n for n, _ in model.named_parameters()}
    assert names - model.pretrained_params == {
        f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()
    }


@torch.no_grad()
def test_metaclip2_text_is_not_clips_text(metaclip2_dir, reference):
    # The same weights in CLIP's text model pool the highest id (its rule when eos_token_id is 2), not the
    # end-of-text token: the reason each family keeps its own text model.
    from transformers import CLIPTextConfig, CLIPTextModel

    _, ids, mask = _batch()
    clip_text = CLIPTextModel(CLIPTextConfig(**reference.config.text_config.to_dict())).eval()
    clip_text.load_state_dict(reference.text_model.state_dict())
    as_clip = clip_text(input_ids=ids, attention_mask=mask).pooler_output
    ours = _metaclip2(metaclip2_dir).text(ids, mask).pooled
    assert (as_clip - ours).abs().max() > 1e-3


@torch.no_grad()
def test_metaclip2_round_trip(metaclip2_dir, tmp_path):
    from transformers import MetaClip2Model

    model = _metaclip2(metaclip2_dir, tubelet_size=2, num_frames=4)
    perturb(model, seed=1)  # as after training, temporal branch included
    left_out = export_clip(model, tmp_path / "out")
    assert left_out and all(".temporal_" in k or k == "visual.temporal_embed" for k in left_out)
    exported = MetaClip2Model.from_pretrained(tmp_path / "out").eval()
    images, ids, mask = _batch()
    torch.testing.assert_close(
        exported.get_image_features(pixel_values=images).pooler_output,
        model.encode_video(images, normalize=False).clip,
        rtol=0,
        atol=1e-5,
    )
    torch.testing.assert_close(
        exported.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
        model.encode_text(ids, mask, normalize=False).sentence,
        rtol=0,
        atol=1e-5,
    )
    # and it loads back as the same model
    again = _metaclip2(tmp_path / "out")
    torch.testing.assert_close(
        again.encode_text(ids, mask).sentence, model.encode_text(ids, mask).sentence, rtol=0, atol=1e-6
    )


def test_a_checkpoint_of_a_metaclip2_model_rebuilds_its_text_tower(metaclip2_dir, tmp_path):
    model = _metaclip2(metaclip2_dir)
    cfg = videovl.load_config(overrides=["model.name=clip", f"model.pretrained={metaclip2_dir}"])
    videovl.save_checkpoint(model, cfg, tmp_path / "ckpt")
    again, _ = videovl.load_checkpoint(tmp_path / "ckpt")
    _, ids, mask = _batch()
    with torch.no_grad():
        torch.testing.assert_close(
            again.eval().encode_text(ids, mask).sentence, model.encode_text(ids, mask).sentence
        )
