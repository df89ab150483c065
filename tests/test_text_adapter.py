"""The text adapter: self-attention layers between a locked text tower and the joint space."""

from __future__ import annotations

import pytest
import torch

import videovl
from videovl.config import ConfigError
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.models.checkpoint import load_checkpoint, save_checkpoint
from videovl.models.export import export_clip
from videovl.train.stages import apply_freeze

SENTENCES = ["a circle moves left then up", "a circle moves up then left", "two"]

pytestmark = pytest.mark.usefixtures("one_thread")


def build(layers: int, **overrides):
    cfg = videovl.model_config("test", text_adapter_layers=layers, **overrides)
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    torch.manual_seed(0)
    return videovl.create_model(cfg).eval()


@pytest.fixture(scope="module")
def tokens():
    cfg = videovl.model_config("test")
    return load_tokenizer(cfg.text)(SENTENCES, padding=True, return_tensors="pt")


def stir(model) -> None:
    """Give the adapter's zero output maps weights, as training does."""
    with torch.no_grad():
        for block in model.text_adapter.blocks:
            for out in (block.self_attn.proj, block.mlp[-1]):
                out.weight.normal_(0, 0.2)


def test_the_adapter_starts_as_the_identity_and_then_moves_the_sentence(tokens):
    plain, adapted = build(0), build(2)
    assert adapted.load_state_dict(plain.state_dict(), strict=False).unexpected_keys == []
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        before, start = plain.encode_text(ids, mask), adapted.encode_text(ids, mask)
        torch.testing.assert_close(start.sentence, before.sentence)
        torch.testing.assert_close(start.words, before.words)
        stir(adapted)
        after = adapted.encode_text(ids, mask)
    assert (after.sentence - before.sentence).abs().max() > 1e-3
    # padding changes nothing: a sentence alone gives what it gave in the padded batch
    n = int(mask[2].sum())
    with torch.no_grad():
        alone = adapted.encode_text(ids[2:3, :n], mask[2:3, :n])
    torch.testing.assert_close(alone.sentence[0], after.sentence[2], atol=1e-5, rtol=1e-5)


def test_the_adapter_trains_beside_a_locked_tower_and_freezes_with_the_projections(tokens):
    model = build(1).train()
    apply_freeze(model, ["text"])
    assert not any(p.requires_grad for p in model.text.parameters())
    assert all(p.requires_grad for p in model.text_adapter.parameters())
    stir(model)
    out = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
    out.sentence[0].dot(out.sentence[1]).backward()
    grads = [p.grad for p in model.text_adapter.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.text.parameters())
    apply_freeze(model, ["visual", "text", "projections"])
    assert not any(p.requires_grad for p in model.text_adapter.parameters())
    apply_freeze(model, ["text", "text_adapter"])  # the adapter alone, the projections train
    assert not any(p.requires_grad for p in model.text_adapter.parameters())
    assert model.text_proj.weight.requires_grad and model.visual_proj.weight.requires_grad


def test_a_checkpoint_keeps_the_adapter_and_one_without_it_gains_an_identity_adapter(tmp_path, tokens):
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    cfg = videovl.Config(model=videovl.model_config("test", text_adapter_layers=1))
    model = build(1)
    stir(model)
    save_checkpoint(model, cfg, tmp_path / "with")
    loaded, loaded_cfg = load_checkpoint(tmp_path / "with")
    assert loaded_cfg.model.text_adapter_layers == 1
    with torch.no_grad():
        want, got = model.encode_text(ids, mask), loaded.eval().encode_text(ids, mask)
    torch.testing.assert_close(got.sentence, want.sentence)

    plain = build(0)
    save_checkpoint(plain, videovl.Config(model=videovl.model_config("test")), tmp_path / "without")
    grown, _ = load_checkpoint(tmp_path / "without", text_adapter_layers=1)
    with torch.no_grad():
        want, got = plain.encode_text(ids, mask), grown.eval().encode_text(ids, mask)
    torch.testing.assert_close(got.sentence, want.sentence)


def test_settings_the_adapter_cannot_take_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"text_adapter_layers is -1"):
        build(-1)
    with pytest.raises(ConfigError, match=r"cannot export to clip: the model has 1 text adapter layer"):
        export_clip(build(1, caption={"enabled": False}), tmp_path / "clip")
