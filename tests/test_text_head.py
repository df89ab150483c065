"""The text head: new layers with their own positions over a locked tower, so word order counts."""

from __future__ import annotations

import pytest
import torch

import videovl
from videovl.config import Config, ConfigError
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.models.checkpoint import load_checkpoint, save_checkpoint
from videovl.models.export import export
from videovl.models.text import TextHead, pool_tokens
from videovl.train.optim import param_groups
from videovl.train.stages import apply_freeze

pytestmark = pytest.mark.usefixtures("one_thread")
SWAPPED = ["the digit 3 moves left, then up", "the digit 3 moves up, then left"]


def model_with_head(layers: int = 2):
    cfg = videovl.model_config("test", text={"head_layers": layers})
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    torch.manual_seed(0)
    return videovl.create_model(cfg), load_tokenizer(cfg.text)


def perturb(head: TextHead) -> None:
    """A trained head: its zero-initialised output projections are not zero any more."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))


def test_a_new_head_passes_the_tower_on_plus_positions():
    torch.manual_seed(0)
    head = TextHead(16, 2, max_length=8, pool="mean")
    hidden, mask = torch.randn(3, 6, 16), torch.ones(3, 6)
    mask[1, 4:] = 0
    out, pooled = head(hidden, mask)
    assert torch.allclose(out, hidden + head.pos_embed[:, :6], atol=1e-6)
    assert torch.allclose(pooled, pool_tokens(out, mask, "mean"))


def test_the_head_makes_a_sentence_depend_on_word_order():
    torch.manual_seed(0)
    head = TextHead(16, 1, max_length=8, pool="mean")
    perturb(head)
    hidden, mask = torch.randn(1, 5, 16), torch.ones(1, 5)
    swapped = hidden[:, [0, 1, 3, 2, 4]]  # two words change places
    assert torch.allclose(pool_tokens(hidden, mask, "mean"), pool_tokens(swapped, mask, "mean"), atol=1e-6)
    a, b = head(hidden, mask)[1], head(swapped, mask)[1]
    assert (a - b).abs().max() > 1e-3


def test_the_head_feeds_sentence_words_and_the_alignment_decoder():
    model, tok = model_with_head()
    perturb(model.text_head)
    batch = tok(SWAPPED, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        emb = model.encode_text(batch["input_ids"], batch["attention_mask"])
        tower = model.text(batch["input_ids"], batch["attention_mask"])
    hidden, pooled = model.text_head(tower.hidden, tower.mask)
    assert torch.allclose(emb.hidden, hidden) and not torch.allclose(emb.hidden, tower.hidden)
    expected = torch.nn.functional.normalize(model.text_proj(pooled), dim=-1)
    assert torch.allclose(emb.sentence, expected, atol=1e-6)


def test_a_locked_tower_keeps_its_head_trainable_and_a_probe_freezes_it():
    model, _ = model_with_head()
    apply_freeze(model, ["text"])
    assert not any(p.requires_grad for p in model.text.parameters())
    assert all(p.requires_grad for p in model.text_head.parameters())
    apply_freeze(model, ["visual", "text", "projections"])
    assert not any(p.requires_grad for p in model.text_head.parameters())
    # The head is new: it learns at the stage's lr, not the tower's text_lr_scale, and its positions
    # are not decayed.
    groups = param_groups(model, weight_decay=0.05, text_lr_scale=0.1)
    head = [g for g in groups if any(p is model.text_head.pos_embed for p in g["params"])]
    assert len(head) == 1 and head[0]["lr_scale"] == 1.0 and head[0]["weight_decay"] == 0.0


def test_a_checkpoint_keeps_the_head(tmp_path):
    model, tok = model_with_head(1)
    perturb(model.text_head)
    save_checkpoint(model, Config(model=model.cfg), tmp_path / "ckpt")
    loaded, cfg = load_checkpoint(tmp_path / "ckpt")
    loaded.eval()
    assert cfg.model.text.head_layers == 1
    batch = tok(SWAPPED, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        a = model.encode_text(batch["input_ids"], batch["attention_mask"]).sentence
        b = loaded.encode_text(batch["input_ids"], batch["attention_mask"]).sentence
    assert torch.equal(a, b)


def test_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="pool 'mean' or 'cls'"):
        TextHead(16, 1, max_length=8, pool="eot")
    with pytest.raises(ValueError, match="longer than the text head's 8 positions"):
        TextHead(16, 1, max_length=8, pool="mean")(torch.zeros(1, 9, 16), torch.ones(1, 9))
    model, _ = model_with_head(1)
    with pytest.raises(ConfigError, match="text head"):
        export(model, "clip", tmp_path / "clip")
