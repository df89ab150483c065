"""VideoMAE: transformers' ``VideoMAEModel`` layout -> videovl's visual encoder.

VideoMAE is a joint space-time ViT with 2-frame tubelets, no class token and a fixed sinusoidal position
table (``pos_embed: sinusoidal``). Its attention has query and value biases but no key bias: videovl's
fused ``qkv`` bias gets zeros for the key. With ``use_mean_pooling`` (the default) the encoder has no
final token norm; the norm comes after the mean (``fc_norm`` of ``VideoMAEForVideoClassification``),
which is videovl's ``final_norm: pooled``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from videovl.config import VisionConfig
from videovl.models.convert import HF_VIT_LAYER, hf_vit_fields, rename

__all__ = ["videomae_vision_fields", "videomae_to_videovl"]


def videomae_vision_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    return hf_vit_fields(config, where) | {
        "tubelet_size": config["tubelet_size"],
        "qkv_bias": True,  # query and value biases; the key's is zero
        "attention": "joint",
        "pool": "mean",
        "class_token": False,
        "pos_embed": "sinusoidal",
        "final_norm": "pooled" if config.get("use_mean_pooling", True) else "tokens",
    }


def videomae_to_videovl(state: dict[str, Tensor], vision: VisionConfig) -> dict[str, Tensor]:
    """A ``VideoMAEModel`` state dict (plus ``fc_norm.*`` when the checkpoint has a classifier) -> a
    VisualEncoder state dict. Keys it does not use are left in ``state`` (the caller reports them)."""
    depth = vision.depth
    out: dict[str, Tensor] = {}
    rename(state, out, {"embeddings.patch_embeddings.projection": "patch_embed.proj"}, "", "")
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.attention.attention.", f"blocks.{i}."
        q, k, v = (state.pop(f"{src}{x}.weight") for x in ("query", "key", "value"))
        out[f"{dst}attn.qkv.weight"] = torch.cat([q, k, v])
        if f"{src}query.bias" in state:
            qb, vb = state.pop(f"{src}query.bias"), state.pop(f"{src}value.bias")
            out[f"{dst}attn.qkv.bias"] = torch.cat([qb, torch.zeros_like(qb), vb])
        else:  # qv_bias false: videovl's qkv keeps a bias, zero
            out[f"{dst}attn.qkv.bias"] = torch.zeros(3 * q.shape[0], dtype=q.dtype)
        rename(state, out, HF_VIT_LAYER, f"encoder.layer.{i}.", dst)
    for final in ("layernorm", "fc_norm"):  # the token norm, or the norm after mean pooling
        if f"{final}.weight" in state:
            rename(state, out, {final: "norm"}, "", "")
    return out
