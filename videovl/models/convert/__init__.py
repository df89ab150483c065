"""Converters between other libraries' checkpoints and videovl's, one module per family.

Each module is a pair of pure functions (their state dict and config -> ours, and back) that never build
a model or touch a file: key renames, reshapes and folds sit in one readable place per family.
``videovl.models.pretrained`` reads the files and checks the result against the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError

__all__ = [
    "HF_ACTIVATIONS",
    "HF_VIT_LAYER",
    "PLAIN_TOWER",
    "act_from_hf",
    "act_to_hf",
    "add_temporal_branch",
    "check_tower_layout",
    "hf_vit_fields",
    "image_tower_config",
    "image_tower_fields",
    "text_tower_fields",
    "deflate_patch_kernel",
    "rename",
]

# transformers' BERT-style ViT layer (TimeSformer, VideoMAE) -> videovl block: the plain renames
HF_VIT_LAYER = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}

# transformers' activation names -> videovl's (both tanh approximations are the same function)
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_python": "gelu",  # the same erf GELU, written out in Python
    "quick_gelu": "quick_gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}


def act_from_hf(name: str, where: str) -> str:
    if name not in HF_ACTIVATIONS:
        raise ConfigError(
            f"{where}: activation '{name}' has no videovl equivalent (videovl has "
            f"{sorted(set(HF_ACTIVATIONS))})"
        )
    return HF_ACTIVATIONS[name]


# What a plain ViT tower leaves off: a family's fields start from these and name what differs.
PLAIN_TOWER: dict[str, Any] = {
    "qk_norm": False,
    "layer_scale": None,
    "pos_embed": "learned",
    "final_norm": "tokens",
    "rope": "none",
    "map_heads": None,
    "map_mlp_ratio": None,
    "map_class_token": False,
    "map_width": None,
    "map_mlp": True,
    "map_query_scale": False,
    "joint_depth": 0,
    "timm_model": None,
    "timm_checkpoint": None,
}


def hf_vit_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The VisionConfig fields that transformers' BERT-style video ViTs (TimeSformer, VideoMAE) name alike;
    each family adds its own (attention, tubelets, class token, positions, pooling)."""
    return {
        "image_size": config["image_size"],
        "patch_size": config["patch_size"],
        "num_frames": config["num_frames"],
        "in_chans": config.get("num_channels", 3),
        "width": config["hidden_size"],
        "depth": config["num_hidden_layers"],
        "heads": config["num_attention_heads"],
        "mlp_ratio": config["intermediate_size"] / config["hidden_size"],
        "pre_norm": False,
        "norm_eps": config["layer_norm_eps"],
        "act": act_from_hf(config["hidden_act"], f"{where} hidden_act"),
        "qk_norm": False,
        "layer_scale": None,
        "rope": "none",
    }


def image_tower_fields(v: dict[str, Any], where: str, **family: Any) -> dict[str, Any]:
    """The VisionConfig of a transformers image-text vision tower (CLIP, SigLIP: ``vision_config`` as a
    dict), a frame model: ``family`` gives what differs (class token, pooling, pre-norm)."""
    return {
        "image_size": v["image_size"],
        "patch_size": v["patch_size"],
        "in_chans": v.get("num_channels", 3),
        "width": v["hidden_size"],
        "depth": v["num_hidden_layers"],
        "heads": v["num_attention_heads"],
        "mlp_ratio": v["intermediate_size"] / v["hidden_size"],
        "qkv_bias": True,
        "norm_eps": v["layer_norm_eps"],
        "act": act_from_hf(v["hidden_act"], f"{where} vision_config.hidden_act"),
        **PLAIN_TOWER,
        **family,
    }


def image_tower_config(v: Any) -> dict[str, Any]:
    """The other way: a transformers image-text ``vision_config`` (CLIP's, SigLIP's) of VisionConfig ``v``."""
    return {
        "hidden_size": v.width,
        "intermediate_size": round(v.width * v.mlp_ratio),
        "num_hidden_layers": v.depth,
        "num_attention_heads": v.heads,
        "num_channels": v.in_chans,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "hidden_act": act_to_hf(v.act),
        "layer_norm_eps": v.norm_eps,
    }


def check_tower_layout(vision: Any, needs: dict[str, Any], family: str, start: str) -> None:
    """Before an export: every field of ``needs`` must hold in VisionConfig ``vision``, else an error naming
    the fields that differ, what ``family``'s format needs, and where a tower that fits starts (``start``)."""
    wrong = {k: getattr(vision, k) for k, v in needs.items() if getattr(vision, k) != v}
    if wrong:
        fits = {k: needs[k] for k in wrong}
        raise ConfigError(
            f"this visual tower does not fit {family}'s layout: vision fields {wrong} ({family} needs "
            f"{fits}); export a tower started from {start}"
        )


def text_tower_fields(t: dict[str, Any], model_type: str) -> dict[str, Any]:
    """The TextConfig of a transformers image-text text tower (``text_config`` as a dict): the family's own
    text model, pooled by its own head (``eot``), at its context length."""
    return {
        "model": None,
        "config": {**t, "model_type": model_type},
        "pool": "eot",
        "max_length": t["max_position_embeddings"],
    }


def act_to_hf(name: str) -> str:
    return {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh"}[name]


def add_temporal_branch(state: dict[str, Tensor], depth: int, prefix: str = "") -> dict[str, Tensor]:
    """Fill the divided encoder's temporal branches as TimeSformer starts them from an image model:
    the temporal attention copies each block's spatial attention and norm1, its output projection is
    zero (so the block still computes the image block), and the temporal embedding is zero."""
    out = dict(state)
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        for part in ("weight", "bias"):
            if f"{b}attn.qkv.{part}" in state:
                out[f"{b}temporal_attn.qkv.{part}"] = state[f"{b}attn.qkv.{part}"].clone()
            out[f"{b}temporal_attn.proj.{part}"] = torch.zeros_like(state[f"{b}attn.proj.{part}"])
            out[f"{b}temporal_norm.{part}"] = state[f"{b}norm1.{part}"].clone()
        for norm in ("q_norm", "k_norm"):
            for part in ("weight", "bias"):
                if f"{b}attn.{norm}.{part}" in state:
                    out[f"{b}temporal_attn.{norm}.{part}"] = state[f"{b}attn.{norm}.{part}"].clone()
    return out


def deflate_patch_kernel(weight: Tensor) -> Tensor:
    """(D, C, t, p, p) tubelet kernel -> the (D, C, p, p) kernel of the image path.

    An image enters the encoder as ``t`` copies of itself, so its 2D kernel is the sum over time: exact
    for either inflation (centre or mean) and for a kernel trained on videos alike."""
    return weight.sum(dim=2)


def rename(src: dict[str, Tensor], dst: dict[str, Tensor], names: dict[str, str], a: str, b: str) -> None:
    """Move ``a + theirs + .weight/.bias`` from ``src`` to ``b + ours + ...`` in ``dst`` for each pair."""
    for theirs, ours in names.items():
        for part in ("weight", "bias"):
            dst[f"{b}{ours}.{part}"] = src.pop(f"{a}{theirs}.{part}")
