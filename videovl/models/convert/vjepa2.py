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

Back (:func:`videovl_to_vjepa2`): the encoder's weights in transformers' names and the ``VJEPA2Config``
of a tower that fits V-JEPA 2's layout. videovl keeps no predictor, so the state dict has none: the
export writes the encoder alone, and transformers starts the predictor afresh when it loads the folder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import PLAIN_TOWER, act_from_hf, act_to_hf, check_tower_layout, rename

__all__ = ["vjepa2_vision_fields", "vjepa2_to_videovl", "videovl_to_vjepa2"]

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


# What V-JEPA 2's encoder is, in videovl's fields (a field absent here may take any value; the pooling and
# any MAP head are videovl's own, over V-JEPA 2's tokens, and are left out)
_VJEPA2_VISION = {
    "attention": "joint",
    "class_token": False,
    "pre_norm": False,
    "qk_norm": False,
    "layer_scale": None,
    "pos_embed": "none",
    "final_norm": "tokens",
    "rope": "3d",
    "rope_temperature": 10000.0,
    "rope_grid": None,
    "rope_offset": 0.0,
    "rope_axes": "yx",
    "attn_softcap": None,
}


def videovl_to_vjepa2(
    state: dict[str, Tensor], vision: VisionConfig
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A VisualEncoder state dict -> (the ``VJEPA2Model`` encoder's state dict, ``encoder.*`` keys only;
    the ``VJEPA2Config`` kwargs). Keys of a MAP head are not V-JEPA 2's and are not read."""
    check_tower_layout(vision, _VJEPA2_VISION, "V-JEPA 2", "a VJEPA2Model folder")
    out: dict[str, Tensor] = {}
    src = dict(state)
    rename(src, out, {"patch_embed.proj": "encoder.embeddings.patch_embeddings.proj"}, "", "")
    has_bias = "blocks.0.attn.qkv.bias" in state
    for i in range(vision.depth):
        a, b = f"blocks.{i}.", f"encoder.layer.{i}."
        for x, w in zip(("query", "key", "value"), src.pop(f"{a}attn.qkv.weight").chunk(3)):
            out[f"{b}attention.{x}.weight"] = w
        if has_bias:
            for x, w in zip(("query", "key", "value"), src.pop(f"{a}attn.qkv.bias").chunk(3)):
                out[f"{b}attention.{x}.bias"] = w
        rename(src, out, {ours: theirs for theirs, ours in _LAYER.items()}, a, b)
    rename(src, out, {"norm": "encoder.layernorm"}, "", "")
    config = {
        "crop_size": vision.image_size,
        "patch_size": vision.patch_size,
        "frames_per_clip": vision.num_frames,
        "tubelet_size": vision.tubelet_size,
        "in_chans": vision.in_chans,
        "hidden_size": vision.width,
        "num_hidden_layers": vision.depth,
        "num_attention_heads": vision.heads,
        "mlp_ratio": vision.mlp_ratio,
        "qkv_bias": has_bias,
        "layer_norm_eps": vision.norm_eps,
        "hidden_act": act_to_hf(vision.act),
    }
    return out, config, sorted(src)
