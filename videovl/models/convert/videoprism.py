"""VideoPrism: transformers' ``VideoPrismVisionModel`` layout -> videovl's visual encoder.

VideoPrism's video encoder is factorised (``attention: factorised``): its spatial layers attend within
each frame (one-frame tubelets, a learnt spatial position table, no class token), a LayerNorm closes the
spatial stage, then a learnt temporal embedding is added and its temporal layers attend over time at each
spatial position (``temporal_depth``), then a final LayerNorm on every token. Every attention caps its
logits at +-50 with a tanh (``attn_softcap``). Its LayerNorms scale by ``weight + 1``: the converter adds
the 1, so videovl's plain LayerNorm computes the same.

A ``VideoPrismVideoModel``, ``VideoPrismForVideoClassification`` or ``VideoPrismClipModel`` folder gives
the same backbone (the caller loads it as ``VideoPrismVisionModel`` or takes ``video_model.vision_model``).

A ``VideoPrismClipModel`` (the LVT checkpoints) as ``model.pretrained`` gives the whole joint space. Its
video embedding adds, after the backbone's final norm, joint space-time layers over all the clip's tokens
(``joint_depth``) and an attention-pooling head (``pool: map``) whose attention runs in the MLP's width
(``map_width``) with a learnt per-channel query scale (``map_query_scale``) and a norm on the pooled token
instead of a residual MLP (``map_mlp: false``). The text tower stays transformers' own
``VideoPrismTextModel`` (its class token appended last; its pooled output is that token, normalised). Both
embeddings are compared unit-normalised with no temperature: videovl's projections start as the identity
and its scale stays 1 (``learn_temperature: false``).

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

=====================================================  =========================================
transformers ``VideoPrismClipModel``                    videovl ``VideoLanguageModel``
=====================================================  =========================================
video_model.vision_model.*                              visual.* (the table above)
video_model.auxiliary_layers.i.*                        visual.joint_blocks.i.* (as the spatial layers)
video_model.head.pooling_attention_query (1, 1, D)      visual.attn_pool.latent
video_model.head.{q_proj; k_proj, v_proj; o_proj}       visual.attn_pool.{q; kv (concatenated); proj}
video_model.head.per_dim_scale                          visual.attn_pool.query_scale
video_model.head_layernorm                              visual.attn_pool.norm (weight + 1)
text_model.*                                            text.model.*
(none)                                                  visual_proj, text_proj: identity; logit_scale 0
=====================================================  =========================================

Back (:func:`videovl_to_videoprism`): a factorised visual tower as a ``VideoPrismVisionModel`` (the first
table read in reverse, each LayerNorm's weight less 1). The joint blocks and pooling head of a tower read
from a ``VideoPrismClipModel`` have no place in the backbone and are left out (and listed); no
``VideoPrismClipModel`` is written back: a trained model's projections are no longer the identity, and
VideoPrism has no place for them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import (
    PLAIN_TOWER,
    act_from_hf,
    act_to_hf,
    check_tower_layout,
    rename,
    text_tower_fields,
)

__all__ = [
    "videoprism_vision_fields",
    "videoprism_to_videovl",
    "videoprism_model_fields",
    "videoprism_clip_to_videovl",
    "videovl_to_videoprism",
]

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


def videoprism_model_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The ModelConfig fields a ``VideoPrismConfig`` (as a dict) fixes: the backbone with its joint layers
    and pooling head, the joint width (the towers' own: no projection), the text tower's config, and a
    softmax over unit-normalised embeddings with no temperature."""
    v, t = config["vision_config"], config["text_config"]
    if v["hidden_size"] != t["hidden_size"]:
        raise ConfigError(
            f"{where}: the vision width {v['hidden_size']} and text width {t['hidden_size']} differ; "
            "videovl reads VideoPrism video-text models whose towers share one width (the joint space)"
        )
    unnormalised = [f"{part}.apply_l2norm" for part in ("vision_config", "text_config")
                    if not config[part].get("apply_l2norm", True)]  # fmt: skip
    if unnormalised:
        raise ConfigError(
            f"{where}: {' and '.join(unnormalised)} is false; videovl's joint space compares unit-normalised "
            "embeddings (as VideoPrism's LVT checkpoints do)"
        )
    vision = videoprism_vision_fields(v, where) | {
        "joint_depth": v["num_auxiliary_layers"],
        "pool": "map",
        "map_width": v["intermediate_size"],
        "map_mlp": False,
        "map_query_scale": True,
    }
    return {
        "embed_dim": v["hidden_size"],
        "contrastive_loss": "softmax",
        "init_temperature": 1.0,  # transformers' scores without their optional temperature
        "learn_temperature": False,
        "vision": vision,
        "text": text_tower_fields(t, "videoprism_text_model"),  # pooled as it pools: its class token
    }


def videoprism_clip_to_videovl(
    state: dict[str, Tensor], vision: VisionConfig, text_prefix: str = "text.model."
) -> dict[str, Tensor]:
    """A ``VideoPrismClipModel`` state dict -> a videovl state dict for a model built with ``vision`` (the
    resolved vision config)."""
    rest = dict(state)
    out: dict[str, Tensor] = {}
    for k in [k for k in rest if k.startswith("text_model.")]:
        out[text_prefix + k[len("text_model.") :]] = rest.pop(k)
    video = "video_model."
    backbone = {k[len(video + "vision_model.") :]: rest.pop(k) for k in list(rest)
                if k.startswith(video + "vision_model.")}  # fmt: skip
    out |= {f"visual.{k}": v for k, v in videoprism_to_videovl(backbone, vision).items()}
    if backbone:
        raise ConfigError(f"VideoPrism backbone weights videovl has no place for: {sorted(backbone)[:5]}")
    joint: dict[str, Tensor] = {}
    aux = {k[len(video) :]: rest.pop(k) for k in list(rest) if k.startswith(video + "auxiliary_layers.")}
    _layers(aux, joint, "auxiliary_layers", "joint_blocks", vision.joint_depth)
    rest |= {video + k: v for k, v in aux.items()}  # any layer beyond joint_depth: reported below
    out |= {f"visual.{k}": v for k, v in joint.items()}
    head, pool = video + "head.", "visual.attn_pool."
    out[pool + "latent"] = rest.pop(head + "pooling_attention_query")
    out[pool + "query_scale"] = rest.pop(head + "per_dim_scale")
    for part in ("weight", "bias"):
        width = vision.map_width or vision.width
        out[f"{pool}q.{part}"] = _bias_or_zeros(rest, f"{head}q_proj", part, width)
        k, v = (_bias_or_zeros(rest, f"{head}{x}_proj", part, width) for x in "kv")
        out[f"{pool}kv.{part}"] = torch.cat([k, v])
        out[f"{pool}proj.{part}"] = rest.pop(f"{head}o_proj.{part}")
    _norm(rest, out, video + "head_layernorm", pool + "norm")
    out["visual_proj.weight"] = torch.eye(vision.width)
    out["text_proj.weight"] = torch.eye(out[f"{text_prefix}embeddings.token_embedding.weight"].shape[1])
    out["logit_scale"] = torch.zeros(())  # scale 1: VideoPrism compares the embeddings as they are
    if rest:
        raise ConfigError(
            f"VideoPrism weights videovl has no place for: {sorted(rest)[:5]} ({len(rest)} in all)"
        )
    return out


def _bias_or_zeros(state: dict[str, Tensor], name: str, part: str, size: int) -> Tensor:
    """``name.part``; a missing bias (qkv_bias false) as ``size`` zeros, since videovl's projections keep
    one."""
    if part == "bias" and f"{name}.bias" not in state:
        return torch.zeros(size)
    return state.pop(f"{name}.{part}")


# What VideoPrism's backbone is, in videovl's fields (a field absent here may take any value; the joint
# blocks, the pooling and any MAP head are beyond the backbone and are left out)
_VIDEOPRISM_VISION = {
    "attention": "factorised",
    "class_token": False,
    "pre_norm": False,
    "qk_norm": False,
    "layer_scale": None,
    "pos_embed": "learned",
    "final_norm": "tokens",
    "rope": "none",
}


def _unnorm(state: dict[str, Tensor], out: dict[str, Tensor], ours: str, theirs: str) -> None:
    out[f"{theirs}.weight"] = state.pop(f"{ours}.weight") - 1.0  # VideoPrism scales by weight + 1
    out[f"{theirs}.bias"] = state.pop(f"{ours}.bias")


def _unlayers(state: dict[str, Tensor], out: dict[str, Tensor], ours: str, theirs: str, depth: int) -> bool:
    """videovl blocks ``ours.i`` -> VideoPrism layers ``theirs.i``; whether their q, k, v have biases."""
    bias = f"{ours}.0.attn.qkv.bias" in state
    for i in range(depth):
        src, dst = f"{ours}.{i}.", f"{theirs}.{i}."
        for part in ("weight", "bias") if bias else ("weight",):
            for x, w in zip("qkv", state.pop(f"{src}attn.qkv.{part}").chunk(3)):
                out[f"{dst}attention.{x}_proj.{part}"] = w
        rename(state, out, {ours: theirs for theirs, ours in _LAYER.items()}, src, dst)
        for a, b in _NORMS.items():
            _unnorm(state, out, src + b, dst + a)
    return bias


def videovl_to_videoprism(
    state: dict[str, Tensor], vision: VisionConfig
) -> tuple[dict[str, Tensor], dict[str, Any], list[str]]:
    """A VisualEncoder state dict -> (a ``VideoPrismVisionModel`` state dict, its
    ``VideoPrismVisionConfig`` kwargs, the keys left out: joint blocks, pooling head)."""
    check_tower_layout(vision, _VIDEOPRISM_VISION, "VideoPrism", "a VideoPrism folder")
    rest = dict(state)
    out: dict[str, Tensor] = {}
    rename(rest, out, {"patch_embed.proj": "spatial_embeddings.patch_embeddings.projection"}, "", "")
    out["spatial_embeddings.position_embeddings"] = rest.pop("pos_embed")
    out["temporal_embeddings.position_embeddings"] = rest.pop("temporal_embed")
    bias = _unlayers(rest, out, "blocks", "spatial_layers", vision.depth)
    _unlayers(rest, out, "temporal_blocks", "temporal_layers", vision.temporal_depth)
    _unnorm(rest, out, "spatial_norm", "layernorm1")
    _unnorm(rest, out, "norm", "layernorm2")
    config = {
        "image_size": vision.image_size,
        "num_frames": vision.num_frames,
        "tubelet_size": [vision.tubelet_size, vision.patch_size, vision.patch_size],
        "num_channels": vision.in_chans,
        "hidden_size": vision.width,
        "num_attention_heads": vision.heads,
        "intermediate_size": round(vision.width * vision.mlp_ratio),
        "hidden_act": act_to_hf(vision.act),
        "layer_norm_eps": vision.norm_eps,
        "qkv_bias": bias,
        "num_spatial_layers": vision.depth,
        "num_temporal_layers": vision.temporal_depth,
        "attn_logit_softcapping": vision.attn_softcap,
    }
    return out, config, sorted(rest)
