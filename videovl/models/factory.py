"""``create_model``: a named size or a config in, a :class:`VideoLanguageModel` out."""

from __future__ import annotations

import copy
from typing import Any

from videovl.config import ModelConfig, deep_merge, from_dict, model_config_dict, to_dict
from videovl.models.model import VideoLanguageModel
from videovl.models.pretrained import load_pretrained, resolve_pretrained

__all__ = ["create_model", "model_config"]


def model_config(name_or_config: str | ModelConfig | dict[str, Any], **overrides: Any) -> ModelConfig:
    """Resolve a size name (``"test"``, ``"demo"``, ``"clip"``, ``"vit-b16"``), a mapping or a config, with
    nested keyword overrides (``vision={"depth": 2}``), into a checked :class:`ModelConfig` (a new one).
    Fields a ``pretrained`` checkpoint fixes (the towers' architecture) are read from it.

    A name or a mapping is expanded from its size here; a :class:`ModelConfig` was expanded when it was
    made (``load_config``, or this function), so it is taken as it is, with the overrides on top:
    expanding it again would merge the size's mappings (``text.config``) back into fields it replaced."""
    if isinstance(name_or_config, ModelConfig):
        if overrides:
            cfg = from_dict(ModelConfig, deep_merge(to_dict(name_or_config), overrides), "model")
        else:
            cfg = copy.deepcopy(name_or_config)  # callers fill token ids into the result
    else:
        raw = {"name": name_or_config} if isinstance(name_or_config, str) else dict(name_or_config)
        cfg = from_dict(ModelConfig, model_config_dict(deep_merge(raw, overrides)), "model")
    return resolve_pretrained(cfg)


def create_model(name_or_config: str | ModelConfig | dict[str, Any], **overrides: Any) -> VideoLanguageModel:
    """Build a model, with the weights of ``pretrained`` checkpoints if the config names any.

    A caption decoder needs the tokenizer's ids (vocabulary size, begin, end); a config without them gets
    them from its tokenizer (``videovl.data.tokenizer.fill_token_ids``)."""
    cfg = model_config(name_or_config, **overrides)
    t = cfg.text
    if cfg.caption.enabled and None in (t.vocab_size, t.bos_token_id, t.eos_token_id):
        from videovl.data.tokenizer import fill_token_ids, load_tokenizer

        fill_token_ids(t, load_tokenizer(t))
    model = VideoLanguageModel(cfg)
    model.pretrained_params = load_pretrained(model)
    return model
