"""VideoPrism: transformers' ``VideoPrismVisionModel`` layout -> videovl's visual encoder.

VideoPrism's video encoder is factorised (``attention: factorised``): its spatial layers attend within
each frame (one-frame tubelets, a learnt spatial position table, no class token), a LayerNorm closes the
spatial stage, then a learnt temporal embedding is added and its temporal layers attend over time at each
spatial position (``temporal_depth``), then a final LayerNorm on every token. Every attention caps its
logits at +-50 with a tanh (``attn_softcap``). Its LayerNorms scale by ``weight + 1``: the converter adds
the 1, so videovl's plain LayerNorm computes the same.

A ``VideoPrismVideoModel``, ``VideoPrismForVideoClassification`` or ``VideoPrismClipModel`` folder gives
the same backbone (the caller loads it as ``VideoPrismVisionModel`` or takes ``video_model.vision_model``).

=====================================================  =========================================
transformers ``VideoPrismVisionModel``                  videovl ``VisualEncoder``
=====================================================  =========================================
spatial_embeddings.patch_embeddings.projection          patch_embed.proj (a (1, p, p) kernel)
spatial_embeddings.position_embeddings (1, N, D)        pos_embed
temporal_embeddings.position_embeddings (1, T, D)       temporal_embed
spatial_layers.i.attention.{q,k,v}_proj                 blocks.i.attn.qkv (concatenated)
spatial_layers.i.attention.o_proj                       blocks.i.attn.proj
spatial_layers.i.{layernorm_before,layernorm_after}     blocks.i.{norm1,norm2} (weight + 1)
spatial_layers.i.mlp.{fc1,fc2}                          blocks.i.mlp.{fc1,fc2}
layernorm1                                              spatial_norm (weight + 1)
temporal_layers.i.*                                     temporal_blocks.i.* (as the spatial layers)
layernorm2                                              norm (weight + 1)
=====================================================  =========================================
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import PLAIN_TOWER, act_from_hf, rename

__all__ = ["videoprism_vision_fields", "videoprism_to_videovl"]

_LAYER = {"attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_NORMS = {"layernorm_before": "norm1", "layernorm_after": "norm2"}


def videoprism_vision_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The VisionConfig fields of a ``VideoPrismVisionConfig`` (as a dict; a ``VideoPrismConfig``'s
    ``vision_config`` is read the same)."""
    config = config.get("vision_config") or config
    tubelet, size = list(config["tubelet_size"]), config["image_size"]
    size = list(size) if isinstance(size, (list, tuple)) else [size, size]
    if len(tubelet) != 3 or tubelet[1] != tubelet[2] or size[0] != size[1]:
        raise ConfigError(
            f"{where}: tubelet_size {tubelet} and image_size {size}; videovl needs square patches and images"
        )
    return {
        "image_size": size[0],
        "patch_size": tubelet[1],
        "tubelet_size": tubelet[0],
        "num_frames": config["num_frames"],
        "in_chans": config.get("num_channels", 3),
        "width": config["hidden_size"],
        "depth": config["num_spatial_layers"],
        "temporal_depth": config["num_temporal_layers"],
        "heads": config["num_attention_heads"],
        "mlp_ratio": config["intermediate_size"] / config["hidden_size"],
        "qkv_bias": True,  # without bias in the file: zeros
        "attention": "factorised",
        "attn_softcap": config.get("attn_logit_softcapping"),
        "pool": "mean",
        "class_token": False,
        "pre_norm": False,
        "norm_eps": config["layer_norm_eps"],
        "act": act_from_hf(config["hidden_act"], f"{where} hidden_act"),
        **PLAIN_TOWER,
    }


def _norm(state: dict[str, Tensor], out: dict[str, Tensor], theirs: str, ours: str) -> None:
    out[f"{ours}.weight"] = state.pop(f"{theirs}.weight") + 1.0  # VideoPrism scales by weight + 1
    out[f"{ours}.bias"] = state.pop(f"{theirs}.bias")


def _layers(state: dict[str, Tensor], out: dict[str, Tensor], theirs: str, ours: str, depth: int) -> None:
    for i in range(depth):
        src, dst = f"{theirs}.{i}.", f"{ours}.{i}."
        q, k, v = (state.pop(f"{src}attention.{x}_proj.weight") for x in "qkv")
        out[f"{dst}attn.qkv.weight"] = torch.cat([q, k, v])
        biases = [state.pop(f"{src}attention.{x}_proj.bias", None) for x in "qkv"]
        if any(b is None for b in biases):  # qkv_bias false: videovl's qkv keeps a bias, zero
            biases = [torch.zeros(q.shape[0], dtype=q.dtype)] * 3
        out[f"{dst}attn.qkv.bias"] = torch.cat(biases)
        rename(state, out, _LAYER, src, dst)
        for a, b in _NORMS.items():
            _norm(state, out, src + a, dst + b)


def videoprism_to_videovl(state: dict[str, Tensor], vision: VisionConfig) -> dict[str, Tensor]:
    """A ``VideoPrismVisionModel`` state dict -> a VisualEncoder state dict; keys it does not use are left
    in ``state`` (the caller reports them)."""
    out: dict[str, Tensor] = {}
    rename(state, out, {"spatial_embeddings.patch_embeddings.projection": "patch_embed.proj"}, "", "")
    out["pos_embed"] = state.pop("spatial_embeddings.position_embeddings")
    out["temporal_embed"] = state.pop("temporal_embeddings.position_embeddings")
    _layers(state, out, "spatial_layers", "blocks", vision.depth)
    _layers(state, out, "temporal_layers", "temporal_blocks", vision.temporal_depth)
    _norm(state, out, "layernorm1", "spatial_norm")
    _norm(state, out, "layernorm2", "norm")
    return out
