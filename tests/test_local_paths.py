"""A path that does not exist reads as one: a mistyped --checkpoint or model.pretrained names the missing
path (and the nearest folder that exists), never "config.yaml is missing" or a hub download."""

import re

import pytest

import videovl
from tools import evaluate, export, extract_embeddings, finetune
from videovl.config import ConfigError, TextConfig, looks_like_path
from videovl.data.tokenizer import load_tokenizer
from videovl.models.text import TextEncoder


@pytest.mark.parametrize(
    "spec, is_path",
    [
        ("/models/clip-vit-base-patch16", True),
        ("./clip", True),
        ("../clip", True),
        ("~/models/clip", True),
        ("runs/demo/model", True),  # hub names have one "/" at most
        ("clip_state.pt", True),
        ("openai/clip-vit-base-patch16", False),
        ("bert-base-uncased", False),
    ],
)
def test_a_path_is_told_from_a_hub_name(spec, is_path):
    assert looks_like_path(spec) is is_path


def test_an_owner_slash_name_is_a_path_when_its_first_part_exists_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path("models/clip")
    (tmp_path / "models").mkdir()
    assert looks_like_path("models/clip")


def _no_such_path(spec: str, parent) -> str:
    return f"'{re.escape(spec)}': no such local file or folder; the nearest folder that exists is {parent}\\."


TOOLS = {
    "evaluate": (evaluate, ["--task", "retrieval", "--manifest", "m.jsonl"]),
    "finetune": (finetune, ["--task", "retrieval"]),
    "export": (export, ["--format", "clip", "--out", "out"]),
    "extract_embeddings": (extract_embeddings, ["--manifest", "m.jsonl", "--out", "emb"]),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_checkpoint_that_does_not_exist_says_so(tool, tmp_path):
    module, argv = TOOLS[tool]
    missing = str(tmp_path / "runs" / "finetune" / "model")
    with pytest.raises(ConfigError, match=f"^--checkpoint is {_no_such_path(missing, tmp_path)}") as err:
        module.main(["--checkpoint", missing, *argv])
    assert "config.yaml" not in str(err.value) and "hf download" not in str(err.value)


def test_a_local_pretrained_path_that_does_not_exist_is_not_a_hub_name(tmp_path):
    missing = str(tmp_path / "models" / "clip-vit-base-patch16")
    clip, video = {"name": "clip", "pretrained": missing}, {"name": "test", "vision": {"pretrained": missing}}
    for model in (clip, video):
        with pytest.raises(ConfigError, match=_no_such_path(missing, tmp_path)) as err:
            videovl.create_model(model)
        assert "hf download" not in str(err.value)
    with pytest.raises(ConfigError, match=f"model.text.model is {_no_such_path(missing, tmp_path)}"):
        TextEncoder(TextConfig(model=missing))
    with pytest.raises(ConfigError, match=f"model.text.tokenizer is {_no_such_path(missing, tmp_path)}"):
        load_tokenizer(TextConfig(model=None, tokenizer=missing))
    # a hub name is still told how to fetch it once
    with pytest.raises(ConfigError, match="never downloads.*hf download openai/clip-vit-base-patch16"):
        videovl.create_model({"name": "clip", "pretrained": "openai/clip-vit-base-patch16"})


def test_a_folder_that_exists_but_does_not_load_says_so(tmp_path):
    folder = re.escape(str(tmp_path))
    with pytest.raises(ConfigError, match=f"model.text.model is '{folder}', which exists but does not load"):
        TextEncoder(TextConfig(model=str(tmp_path)))
