"""Perception Encoder (PE-Core), as open_clip builds it: its state dict -> videovl's.

open_clip's ``PE-Core-*`` models are a ``CustomTextCLIP``: the visual tower is timm's ``vit_pe_core_*``
(an ``Eva``) inside open_clip's ``TimmModel``, the text tower open_clip's ``TextTransformer``. The visual
tower maps onto videovl's encoder with general options: 2D rotary positions (``rope: 2d``, with the grid,
offset and axis order of the timm model), a learnt absolute position table beside them, the pre-norm,
the MAP head over the class token and the patch tokens in its own number of heads (``map_heads``,
``map_class_token``), the timm head (a linear map with bias) as the visual projection
(``visual_proj_bias``). The text tower becomes transformers' ``CLIPTextModel`` (the same layout as
open_clip's CLIP text tower, :func:`~videovl.models.convert.clip.openclip_text_to_clip`).

==========================================================  ==============================================
open_clip ``PE-Core-*`` (``CustomTextCLIP``)                videovl
==========================================================  ==============================================
visual.trunk.patch_embed.proj.weight (D, C, p, p)           visual.patch_embed.proj.weight (D,C,t,p,p)
visual.trunk.cls_token, pos_embed, norm_pre                 visual.cls_token, pos_embed, norm_pre
visual.trunk.blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp}  visual.blocks.i.* (the same names)
visual.trunk.norm, visual.trunk.attn_pool.*                 visual.norm, visual.attn_pool.*
visual.trunk.head (weight and bias)                         visual_proj (weight and bias)
text.*                                                      text.model.* (CLIPTextModel, as open_clip CLIP)
logit_scale                                                 logit_scale
==========================================================  ==============================================

What the state dict does not record (heads, rotary settings, the MAP head's heads) is read from the timm
tower the open_clip model config names, built on the meta device by the caller
(:func:`pe_vision_fields` reads it; nothing here builds a model). In a video the rotary positions are
spatial only: each frame's tokens by their (row, column), the time axis by the temporal embedding (zero at
the start) and the divided encoder's temporal attention (none in PE), so an image is PE's own computation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import add_temporal_branch
from videovl.models.convert.clip import openclip_text_to_clip
from videovl.models.layers import resample_spatial

__all__ = ["pe_vision_fields", "pe_text_checks", "pe_model_fields", "pe_to_videovl", "PE_MARKER"]

# The key that tells an open_clip state dict with a timm visual tower (PE-Core's) from a plain ViT CLIP.
PE_MARKER = "visual.trunk.patch_embed.proj.weight"

# open_clip text_cfg settings whose other values change the computation in ways CLIPTextModel cannot hold
_TEXT_DEFAULTS = {
    "embed_cls": False,
    "no_causal_mask": False,
    "final_ln_after_pool": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
    "ls_init_value": None,
    "hf_model_name": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "norm_kwargs": None,
    "act_kwargs": None,
}


def pe_text_checks(model_cfg: dict[str, Any], where: str) -> int:
    """The text heads of open_clip's model config (``text_cfg.heads``, open_clip's default 8), after
    checking that the tower is the plain ``TextTransformer`` videovl reads as a CLIP text model."""
    text = model_cfg.get("text_cfg")
    if not isinstance(text, dict):
        raise ConfigError(f"{where} is not an open_clip model config: it has no 'text_cfg' section")
    other = {k: text[k] for k, v in _TEXT_DEFAULTS.items() if k in text and text[k] != v}
    if other:
        raise ConfigError(
            f"{where}: text_cfg {other} changes open_clip's text tower in ways videovl's (transformers' "
            f"CLIPTextModel) cannot hold; it reads { ({k: _TEXT_DEFAULTS[k] for k in other}) }"
        )
    return int(text.get("heads", 8))


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: the timm visual tower has {what}, which videovl's encoder cannot hold")


def pe_vision_fields(trunk: nn.Module, where: str) -> dict[str, Any]:
    """The VisionConfig fields of a timm PE tower (an ``Eva`` as ``vit_pe_core_*`` builds it, with open_clip's
    ``num_classes`` and ``global_pool="map"``; on the meta device: only its structure is read), and the joint
    width (its head's). Options videovl's encoder lacks are a ConfigError naming them."""
    name = type(trunk).__name__
    _need(name == "Eva", where, f"class {name} (videovl reads timm's Eva, as vit_pe_core_* builds it)")
    blk, rope, pool = trunk.blocks[0], getattr(trunk, "rope", None), getattr(trunk, "attn_pool", None)
    _need(rope is not None and type(rope).__name__ == "RotaryEmbeddingCat", where, f"rotary embedding {rope}")
    _need(not rope.in_pixels and rope.grid_type == "index", where, "rotary positions in pixels")
    _need(not rope.rotate_half, where, "rotate-half rotary channels")
    _need(not getattr(rope, "aug_active", False), where, "rotary coordinate augmentation")
    _need(getattr(trunk, "reg_token", None) is None, where, "register tokens")
    _need(trunk.pos_embed is not None and not trunk.no_embed_class, where, "no class position embedding")
    _need(getattr(blk.attn, "qkv", None) is not None, where, "separate q, k, v projections")
    _need(isinstance(blk.attn.q_norm, nn.Identity), where, "q/k norms")
    _need(isinstance(getattr(blk.attn, "norm", nn.Identity()), nn.Identity), where, "an inner attention norm")
    _need(getattr(blk.attn, "gate", None) is None, where, "gated attention")
    _need(getattr(blk, "gamma_1", None) is None, where, "layer scale")
    act = getattr(blk.mlp, "act", None)
    _need(isinstance(act, nn.GELU) and act.approximate == "none", where, f"MLP activation {act}")
    _need(isinstance(getattr(blk.mlp, "norm", nn.Identity()), nn.Identity), where, "a norm inside the MLP")
    _need(pool is not None and pool.latent.shape[1] == 1, where, "no single-probe attention pooling (MAP)")
    _need(isinstance(trunk.fc_norm, nn.Identity), where, "a norm after pooling")
    _need(isinstance(trunk.head, nn.Linear) and trunk.head.bias is not None, where, "no linear head")
    height, width = trunk.patch_embed.img_size
    patch = trunk.patch_embed.patch_size
    _need(height == width and patch[0] == patch[1], where, f"a non-square image {height}x{width} or patch")
    dim = trunk.embed_dim
    class_token = trunk.cls_token is not None
    fields = {
        "image_size": height,
        "patch_size": patch[0],
        "in_chans": trunk.patch_embed.proj.in_channels,
        "width": dim,
        "depth": len(trunk.blocks),
        "heads": blk.attn.num_heads,
        "mlp_ratio": blk.mlp.fc1.out_features / dim,
        "qkv_bias": blk.attn.qkv.bias is not None,
        "class_token": class_token,
        "pool": "map",
        "pre_norm": isinstance(trunk.norm_pre, nn.LayerNorm),
        "norm_eps": trunk.norm.eps,
        "act": "gelu",
        "qk_norm": False,
        "layer_scale": None,
        "pos_embed": "learned",
        "final_norm": "tokens",
        "rope": "2d",
        "rope_temperature": float(rope.temperature),
        "rope_grid": None if rope.ref_feat_shape is None else tuple(int(x) for x in rope.ref_feat_shape),
        "rope_offset": float(rope.grid_offset),
        "rope_axes": "xy" if rope.grid_indexing == "xy" else "yx",
        "map_heads": pool.num_heads,
        "map_mlp_ratio": pool.mlp.fc1.out_features / dim,
        "map_class_token": class_token,
        "timm_model": None,
        "timm_checkpoint": None,
    }
    return {"embed_dim": trunk.head.out_features, "vision": fields}


def pe_model_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The ModelConfig fields of a PE-Core model: ``config`` holds the visual fields
    (:func:`pe_vision_fields`) and the ``CLIPTextConfig`` kwargs of its text tower (``text_config``)."""
    t = config["text_config"]
    return {
        "embed_dim": config["embed_dim"],
        "visual_proj_bias": True,
        "vision": config["vision"],
        "text": {
            "model": None,
            "config": {**t, "model_type": "clip_text_model"},
            "pool": "eot",
            "max_length": t["max_position_embeddings"],
        },
    }


def pe_to_videovl(
    state: dict[str, Tensor], vision: VisionConfig, text_prefix: str = "text.model."
) -> dict[str, Tensor]:
    """An open_clip PE-Core state dict -> a videovl state dict for a model built with ``vision`` (the resolved
    vision config: tubelet, inflation, attention and image size decide the visual weights)."""
    from videovl.models.inflate import inflate_patch_kernel

    rest = {k: v for k, v in state.items() if k != "text.attn_mask"}
    out: dict[str, Tensor] = {}
    trunk = "visual.trunk."
    for k in [k for k in rest if k.startswith(trunk)]:
        out["visual." + k[len(trunk) :]] = rest.pop(k)
    out["visual.patch_embed.proj.weight"] = inflate_patch_kernel(
        out["visual.patch_embed.proj.weight"], vision.tubelet_size, vision.inflation
    )
    pos, prefix = out["visual.pos_embed"], int(vision.class_token)  # (1, [1 +] N, D): class position first
    old, new = math.isqrt(pos.shape[1] - prefix), vision.image_size // vision.patch_size
    out["visual.pos_embed"] = torch.cat(
        [pos[:, :prefix], resample_spatial(pos[:, prefix:], (old,) * 2, (new,) * 2)], 1
    )
    for part in ("weight", "bias"):
        out[f"visual_proj.{part}"] = out.pop(f"visual.head.{part}")
    text: dict[str, Tensor] = {}
    openclip_text_to_clip(rest, text, prefix="text.")
    out["text_proj.weight"] = text.pop("text_projection.weight")
    out |= {text_prefix + k.removeprefix("text_model."): v for k, v in text.items()}
    out["logit_scale"] = rest.pop("logit_scale")
    if rest:
        raise ConfigError(
            f"PE-Core weights videovl has no place for: {sorted(rest)[:5]} ({len(rest)} in all); videovl "
            "reads open_clip's PE-Core layout (timm tower, timm_proj null; TextTransformer; no logit bias)"
        )
    # an image model knows no time: the temporal embedding starts at zero (joint attention has it too)
    out["visual.temporal_embed"] = torch.zeros(1, vision.num_frames // vision.tubelet_size, vision.width)
    if vision.attention == "divided":
        out = add_temporal_branch(out, vision.depth, prefix="visual.")
    return out
