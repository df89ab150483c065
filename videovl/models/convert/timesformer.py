"""TimeSformer: transformers' ``TimesformerModel`` layout <-> videovl's visual encoder.

Both are divided space-time ViTs with the same arithmetic; the differences are names and two folds:

- TimeSformer's temporal branch is ``temporal_dense(temporal_attention.output.dense(attn))``: two linear
  maps in a row, folded into videovl's one ``temporal_attn.proj`` (exact; unfolded again on export with
  ``temporal_dense`` as the identity).
- TimeSformer orders patch tokens (h, w, t) and takes videos as (B, T, C, H, W); the weights do not
  depend on either.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import HF_VIT_LAYER, act_to_hf, hf_vit_fields, rename

__all__ = ["timesformer_vision_fields", "timesformer_to_videovl", "videovl_to_timesformer"]

_ATTENTION = {"divided_space_time": "divided", "joint_space_time": "joint"}


def timesformer_vision_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    kind = config.get("attention_type")
    if kind not in _ATTENTION:
        raise ConfigError(
            f"{where}: TimeSformer attention_type '{kind}' has no videovl equivalent (videovl has "
            f"{sorted(_ATTENTION)})"
        )
    return hf_vit_fields(config, where) | {
        "tubelet_size": 1,
        "qkv_bias": config.get("qkv_bias", True),
        "attention": _ATTENTION[kind],
        "pool": "cls",
        "class_token": True,
        "pos_embed": "learned",
        "final_norm": "tokens",
    }


def timesformer_to_videovl(state: dict[str, Tensor], vision: VisionConfig) -> dict[str, Tensor]:
    """A ``TimesformerModel`` state dict -> a VisualEncoder state dict. Keys it does not use are left
    in ``state`` (the caller reports them)."""
    depth = vision.depth
    out: dict[str, Tensor] = {}
    emb = "embeddings."
    out["patch_embed.proj.weight"] = state.pop(emb + "patch_embeddings.projection.weight").unsqueeze(2)
    out["patch_embed.proj.bias"] = state.pop(emb + "patch_embeddings.projection.bias")
    out["cls_token"] = state.pop(emb + "cls_token")
    out["pos_embed"] = state.pop(emb + "position_embeddings")
    out["temporal_embed"] = state.pop(emb + "time_embeddings")
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        rename(state, out, HF_VIT_LAYER, src, dst)
        rename(state, out, {"attention.attention.qkv": "attn.qkv"}, src, dst)
        if f"{src}temporal_layernorm.weight" in state:
            rename(state, out, {"temporal_layernorm": "temporal_norm"}, src, dst)
            rename(state, out, {"temporal_attention.attention.qkv": "temporal_attn.qkv"}, src, dst)
            w1 = state.pop(f"{src}temporal_attention.output.dense.weight")
            b1 = state.pop(f"{src}temporal_attention.output.dense.bias")
            w2, b2 = state.pop(f"{src}temporal_dense.weight"), state.pop(f"{src}temporal_dense.bias")
            out[f"{dst}temporal_attn.proj.weight"] = w2 @ w1
            out[f"{dst}temporal_attn.proj.bias"] = w2 @ b1 + b2
    rename(state, out, {"layernorm": "norm"}, "", "")
    return out


def videovl_to_timesformer(state: dict[str, Tensor], vision: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A divided (or joint) VisualEncoder state dict -> (``TimesformerModel`` state dict, config kwargs)."""
    needs = {
        "tubelet_size": 1,
        "class_token": True,
        "pre_norm": False,
        "qk_norm": False,
        "layer_scale": None,
        "pos_embed": "learned",
        "final_norm": "tokens",
        "pool": "cls",
        "rope": "none",
    }
    wrong = {k: getattr(vision, k) for k, v in needs.items() if getattr(vision, k) != v}
    if wrong:
        fits = {k: needs[k] for k in wrong}
        raise ConfigError(
            f"this visual encoder does not fit TimeSformer's layout: {wrong} (TimeSformer needs {fits})"
        )
    src = dict(state)
    out: dict[str, Tensor] = {}
    emb = "embeddings."
    out[emb + "patch_embeddings.projection.weight"] = src.pop("patch_embed.proj.weight").sum(dim=2)
    out[emb + "patch_embeddings.projection.bias"] = src.pop("patch_embed.proj.bias")
    out[emb + "cls_token"] = src.pop("cls_token")
    out[emb + "position_embeddings"] = src.pop("pos_embed")
    out[emb + "time_embeddings"] = src.pop("temporal_embed")
    for i in range(vision.depth):
        s, d = f"blocks.{i}.", f"encoder.layer.{i}."
        rename(src, out, {v: k for k, v in HF_VIT_LAYER.items()}, s, d)
        rename(src, out, {"attn.qkv": "attention.attention.qkv"}, s, d)
        if vision.attention == "divided":
            rename(src, out, {"temporal_norm": "temporal_layernorm"}, s, d)
            rename(src, out, {"temporal_attn.qkv": "temporal_attention.attention.qkv"}, s, d)
            rename(src, out, {"temporal_attn.proj": "temporal_attention.output.dense"}, s, d)
            w = out[f"{d}temporal_attention.output.dense.weight"]
            out[f"{d}temporal_dense.weight"] = torch.eye(w.shape[0], dtype=w.dtype)
            out[f"{d}temporal_dense.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
    rename(src, out, {"norm": "layernorm"}, "", "")
    if src:
        raise ConfigError(f"weights TimeSformer has no place for: {sorted(src)[:5]}")
    config = {
        "image_size": vision.image_size,
        "patch_size": vision.patch_size,
        "num_channels": vision.in_chans,
        "num_frames": vision.num_frames,
        "hidden_size": vision.width,
        "num_hidden_layers": vision.depth,
        "num_attention_heads": vision.heads,
        "intermediate_size": round(vision.width * vision.mlp_ratio),
        "hidden_act": act_to_hf(vision.act),
        "layer_norm_eps": vision.norm_eps,
        "qkv_bias": vision.qkv_bias,
        "attention_type": {v: k for k, v in _ATTENTION.items()}[vision.attention],
    }
    return out, config
