"""``create_model``: a named size or a config in, a :class:`VideoLanguageModel` out."""

from __future__ import annotations

from typing import Any

from videovl.config import ModelConfig, deep_merge, from_dict, model_config_dict, to_dict
from videovl.models.model import VideoLanguageModel

__all__ = ["create_model", "model_config"]


def model_config(name_or_config: str | ModelConfig | dict[str, Any], **overrides: Any) -> ModelConfig:
    """Resolve a size name (``"test"``, ``"demo"``, ``"vit-b16"``), a mapping or a config, with nested
    keyword overrides (``vision={"depth": 2}``), into a checked :class:`ModelConfig`."""
    if isinstance(name_or_config, ModelConfig):
        raw = to_dict(name_or_config)
    elif isinstance(name_or_config, str):
        raw = {"name": name_or_config}
    else:
        raw = dict(name_or_config)
    raw = model_config_dict(deep_merge(raw, overrides))
    return from_dict(ModelConfig, raw, "model")


def create_model(name_or_config: str | ModelConfig | dict[str, Any], **overrides: Any) -> VideoLanguageModel:
    """Build a model. With captioning enabled, the config's ``text`` must carry the tokenizer's ids
    (``videovl.data.tokenizer.fill_token_ids``), since models never see tokenizers."""
    return VideoLanguageModel(model_config(name_or_config, **overrides))
