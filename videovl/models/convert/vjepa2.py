"""V-JEPA 2: transformers' ``VJEPA2Model`` layout -> videovl's visual encoder.

V-JEPA 2's encoder is a joint space-time ViT with 2-frame tubelets, no class token and no absolute
position embedding: every attention rotates its queries and keys by each token's (time, row, column) in
the clip (``rope: 3d``, ``pos_embed: none``, rows before columns: ``rope_axes: yx``). Its final LayerNorm
is on every token; videovl pools their mean (V-JEPA 2's attentive probe is a classifier's, trained per
task, and is not read). The predictor, which only the JEPA objective uses, is left out.

=====================================================  =========================================
transformers ``VJEPA2Model``                            videovl ``VisualEncoder``
=====================================================  =========================================
encoder.embeddings.patch_embeddings.proj (Conv3d)       patch_embed.proj
encoder.layer.i.attention.{query,key,value}             blocks.i.attn.qkv (concatenated)
encoder.layer.i.attention.proj                          blocks.i.attn.proj
encoder.layer.i.{norm1,norm2,mlp.fc1,mlp.fc2}           blocks.i.{norm1,norm2,mlp.fc1,mlp.fc2}
encoder.layernorm                                       norm
predictor.*                                             (left out)
=====================================================  =========================================
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import PLAIN_TOWER, act_from_hf, rename

__all__ = ["vjepa2_vision_fields", "vjepa2_to_videovl"]

_LAYER = {"norm1": "norm1", "attention.proj": "attn.proj", "norm2": "norm2", "mlp.fc1": "mlp.fc1",
          "mlp.fc2": "mlp.fc2"}  # fmt: skip


def vjepa2_vision_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The VisionConfig fields a ``VJEPA2Config`` (as a dict) fixes; ``num_frames`` is the clip length it
    was trained on (``frames_per_clip``); rotary positions take any other count as they are."""
    patch = config["patch_size"]
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise ConfigError(f"{where}: patch_size {patch} is not square; videovl needs square patches")
        patch = patch[0]
    return {
        "image_size": config["crop_size"],
        "patch_size": patch,
        "num_frames": config["frames_per_clip"],
        "tubelet_size": config["tubelet_size"],
        "in_chans": config.get("in_chans", 3),
        "width": config["hidden_size"],
        "depth": config["num_hidden_layers"],
        "heads": config["num_attention_heads"],
        "mlp_ratio": float(config["mlp_ratio"]),
        "qkv_bias": True,  # without bias in the file: zeros
        "attention": "joint",
        "pool": "mean",
        "class_token": False,
        "pre_norm": False,
        "norm_eps": config["layer_norm_eps"],
        "act": act_from_hf(config["hidden_act"], f"{where} hidden_act"),
        **PLAIN_TOWER,
        "pos_embed": "none",
        "rope": "3d",
        "rope_temperature": 10000.0,
        "rope_grid": None,
        "rope_offset": 0.0,
        "rope_axes": "yx",
    }


def vjepa2_to_videovl(state: dict[str, Tensor], vision: VisionConfig) -> dict[str, Tensor]:
    """A ``VJEPA2Model`` state dict -> a VisualEncoder state dict. The predictor's keys are dropped; keys it
    does not use otherwise are left in ``state`` (the caller reports them)."""
    depth = vision.depth
    for k in [k for k in state if k.startswith("predictor.")]:
        del state[k]
    out: dict[str, Tensor] = {}
    rename(state, out, {"encoder.embeddings.patch_embeddings.proj": "patch_embed.proj"}, "", "")
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        q, k, v = (state.pop(f"{src}attention.{x}.weight") for x in ("query", "key", "value"))
        out[f"{dst}attn.qkv.weight"] = torch.cat([q, k, v])
        biases = [state.pop(f"{src}attention.{x}.bias", None) for x in ("query", "key", "value")]
        if any(b is None for b in biases):  # qkv_bias false: videovl's qkv keeps a bias, zero
            biases = [torch.zeros(q.shape[0], dtype=q.dtype)] * 3
        out[f"{dst}attn.qkv.bias"] = torch.cat(biases)
        rename(state, out, _LAYER, src, dst)
    rename(state, out, {"encoder.layernorm": "norm"}, "", "")
    return out
