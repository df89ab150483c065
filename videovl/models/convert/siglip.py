"""SigLIP (and SigLIP 2's fixed-resolution checkpoints): transformers' ``SiglipModel`` layout -> videovl's.

The visual tower is a ViT without a class token, whose pooled output is a multi-head attention pooling
(MAP) head: videovl's encoder with ``class_token: false`` and ``pool: map``. The text tower stays
transformers' own ``SiglipTextModel`` inside :class:`~videovl.models.text.TextEncoder`, its pooled output
(the last token through its ``head``, with bias) as SigLIP computes it. SigLIP has no projection after
either tower: videovl's two projections start as the identity. The learnt scale and bias come along.

=========================================================  =================================================
transformers ``SiglipModel``                               videovl
=========================================================  =================================================
vision_model.embeddings.patch_embedding (D,C,p,p) + bias   visual.patch_embed.proj (D,C,t,p,p) inflated
vision_model.embeddings.position_embedding.weight (N, D)   visual.pos_embed (1, N, D)
vision_model.encoder.layers.i.*                            visual.blocks.i.* (as CLIP's layers)
vision_model.post_layernorm                                visual.norm
vision_model.head.probe                                    visual.attn_pool.latent
vision_model.head.attention.in_proj_* (q; k, v)            visual.attn_pool.q; visual.attn_pool.kv
vision_model.head.attention.out_proj / layernorm / mlp.*   visual.attn_pool.proj / norm / mlp.*
(none)                                                     visual_proj.weight, text_proj.weight: identity
logit_scale (1,), logit_bias (1,)                          logit_scale (), logit_bias ()
text_model.*                                               text.model.*
=========================================================  =================================================

Back to ``SiglipModel`` (:func:`videovl_to_siglip`): the image path as above, read in reverse (the
tubelet kernel summed over time; the temporal branch left out). SigLIP has no projections, so videovl's
have to disappear into its towers. The text projection folds into the text tower's ``head`` (a linear
layer with bias: ``P (W x + b) = (P W) x + P b``, exact). The visual one cannot: the MAP head ends in a
residual MLP, ``y = a + mlp(norm(a))``, and ``P y`` would need ``P a`` on the residual path while the
norm still reads ``a``; so the export needs the visual projection (with its bias and the ordered pooling's
maps, as an image sees them) to be the identity, and says so where it is not.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import (
    add_temporal_branch,
    deflate_patch_kernel,
    image_tower_config,
    image_tower_fields,
    text_tower_fields,
)
from videovl.models.layers import resample_spatial

__all__ = ["siglip_model_fields", "siglip_to_videovl", "videovl_to_siglip"]

_BLOCK = {  # SigLIP encoder layer -> videovl block, the plain renames (as CLIP's)
    "self_attn.out_proj": "attn.proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HEAD = {"attention.out_proj": "proj", "layernorm": "norm", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def siglip_model_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The ModelConfig fields a ``SiglipConfig`` (as a dict) fixes: the towers' architecture, the joint
    width (the towers' own: no projection), the text tower's config, the sigmoid objective."""
    v, t = config["vision_config"], config["text_config"]
    if not v.get("vision_use_head", True):
        raise ConfigError(f"{where}: vision_use_head is false; videovl pools SigLIP's image by its MAP head")
    projection = t.get("projection_size") or t["hidden_size"]
    if not v["hidden_size"] == t["hidden_size"] == projection:
        raise ConfigError(
            f"{where}: the vision width {v['hidden_size']}, text width {t['hidden_size']} and text "
            f"projection_size {projection} differ; videovl reads SigLIPs whose towers share one width"
        )
    return {
        "embed_dim": v["hidden_size"],
        "contrastive_loss": "sigmoid",
        "max_logit_scale": math.inf,  # SigLIP's learnt scale is not clamped (trained ones exceed 100)
        "vision": image_tower_fields(v, where, class_token=False, pool="map", pre_norm=False),
        "text": text_tower_fields(t, "siglip_text_model"),  # pooled by its head (the last token)
    }


def siglip_to_videovl(
    state: dict[str, Tensor], vision: VisionConfig, text_prefix: str = "text.model."
) -> dict[str, Tensor]:
    """A ``SiglipModel`` state dict -> a videovl state dict for a model built with ``vision`` (the
    resolved vision config: tubelet, inflation, attention and image size decide the visual weights)."""
    from videovl.models.inflate import inflate_patch_kernel

    out: dict[str, Tensor] = {}
    rest = dict(state)
    rest.pop("vision_model.embeddings.position_ids", None)  # buffers some versions save
    rest.pop("text_model.embeddings.position_ids", None)
    for k in [k for k in rest if k.startswith("text_model.")]:
        out[text_prefix + k[len("text_model.") :]] = rest.pop(k)
    emb = "vision_model.embeddings."
    out["visual.patch_embed.proj.weight"] = inflate_patch_kernel(
        rest.pop(emb + "patch_embedding.weight"), vision.tubelet_size, vision.inflation
    )
    out["visual.patch_embed.proj.bias"] = rest.pop(emb + "patch_embedding.bias")
    pos = rest.pop(emb + "position_embedding.weight").unsqueeze(0)  # (1, N, D): no class position
    old, new = math.isqrt(pos.shape[1]), vision.image_size // vision.patch_size
    out["visual.pos_embed"] = resample_spatial(pos, (old, old), (new, new))
    for part in ("weight", "bias"):
        out[f"visual.norm.{part}"] = rest.pop(f"vision_model.post_layernorm.{part}")
    for i in range(vision.depth):
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual.blocks.{i}."
        for part in ("weight", "bias"):
            q, k, v = (rest.pop(f"{src}self_attn.{x}_proj.{part}") for x in "qkv")
            out[f"{dst}attn.qkv.{part}"] = torch.cat([q, k, v], dim=0)
            for theirs, ours in _BLOCK.items():
                out[f"{dst}{ours}.{part}"] = rest.pop(f"{src}{theirs}.{part}")
    head = "vision_model.head."
    out["visual.attn_pool.latent"] = rest.pop(head + "probe")
    for part in ("weight", "bias"):
        q, kv = rest.pop(f"{head}attention.in_proj_{part}").split([vision.width, 2 * vision.width])
        out[f"visual.attn_pool.q.{part}"], out[f"visual.attn_pool.kv.{part}"] = q, kv
        for theirs, ours in _HEAD.items():
            out[f"visual.attn_pool.{ours}.{part}"] = rest.pop(f"{head}{theirs}.{part}")
    out["visual_proj.weight"] = torch.eye(vision.width)
    text_width = out[f"{text_prefix}head.weight"].shape[0]
    out["text_proj.weight"] = torch.eye(text_width)
    out["logit_scale"] = rest.pop("logit_scale").reshape(())
    out["logit_bias"] = rest.pop("logit_bias").reshape(())
    if rest:
        raise ConfigError(f"SigLIP weights videovl has no place for: {sorted(rest)[:5]} ({len(rest)} in all)")
    # an image model knows no time: the temporal embedding starts at zero (joint attention has it too)
    out["visual.temporal_embed"] = torch.zeros(1, vision.num_frames // vision.tubelet_size, vision.width)
    if vision.attention == "divided":
        out = add_temporal_branch(out, vision.depth, prefix="visual.")
    return out


# What SigLIP's vision tower is, in videovl's fields (a field absent here may take any value)
_SIGLIP_VISION = {
    "class_token": False,
    "pool": "map",
    "pre_norm": False,
    "qkv_bias": True,
    "qk_norm": False,
    "layer_scale": None,
    "pos_embed": "learned",
    "final_norm": "tokens",
    "rope": "none",
    "map_class_token": False,
    "map_width": None,
    "map_mlp": True,
    "map_query_scale": False,
    "temporal_depth": 0,
    "joint_depth": 0,
    "attn_softcap": None,
}


def _check_fits(vision: VisionConfig, text_config: dict[str, Any]) -> None:
    wrong = {k: getattr(vision, k) for k, v in _SIGLIP_VISION.items() if getattr(vision, k) != v}
    if vision.attention == "factorised":
        wrong["attention"] = vision.attention
    # the head shares the encoder's heads and MLP width in SigLIP: None (the encoder's) or the same value
    for field, same in (("map_heads", vision.heads), ("map_mlp_ratio", vision.mlp_ratio)):
        if getattr(vision, field) not in (None, same):
            wrong[field] = getattr(vision, field)
    text = text_config.get("model_type")
    if wrong or text != "siglip_text_model":
        fits = {k: _SIGLIP_VISION.get(k, "the encoder's (None)") for k in wrong}
        if "attention" in wrong:
            fits["attention"] = "divided or joint"
        raise ConfigError(
            f"this model does not fit SigLIP's layout: vision fields {wrong} (SigLIP needs {fits}), text "
            f"tower '{text}' (SigLIP needs 'siglip_text_model'); export a model started from a SiglipModel "
            "folder"
        )


def _image_projection(state: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
    """The visual projection an image sees: the linear map, plus the ordered pooling's maps summed over
    time (an image is a still clip), and its bias if any."""
    weight = state["visual_proj.weight"]
    if "ordered_proj" in state:  # (T', Wv, D)
        weight = weight + state["ordered_proj"].sum(0).t()
    return weight, state.get("visual_proj.bias")


def videovl_to_siglip(
    state: dict[str, Tensor],
    vision: VisionConfig,
    text_config: dict[str, Any],
    embed_dim: int,
    text_prefix: str = "text.model.",
    max_logit_scale: float = math.inf,
) -> tuple[dict[str, Tensor], dict[str, Any], list[str]]:
    """A videovl state dict -> (``SiglipModel`` state dict, ``SiglipConfig`` kwargs, the keys left out).

    SigLIP holds the image path only: the temporal branch and embedding are left out (and listed), as are
    the heads. The text projection folds into the text head; the visual projection must be the identity
    (see the module's docstring), else a ConfigError says how far it moved. The scale is written clamped
    at ``max_logit_scale`` (SigLIP does not clamp), so SigLIP's logits are videovl's."""
    _check_fits(vision, text_config)
    weight, bias = _image_projection(state)
    moved = (weight - torch.eye(*weight.shape, dtype=weight.dtype)).abs().max().item()
    if bias is not None:
        moved = max(moved, bias.abs().max().item())
    if moved > 0:
        parts = "visual_proj" + (", its bias" if bias is not None else "")
        parts += " and ordered_proj" if "ordered_proj" in state else ""
        raise ConfigError(
            f"the visual projection ({parts}) of shape {tuple(weight.shape)} is not the identity (largest "
            f"difference {moved:.3g}): SigLIP's image embedding is its MAP head's output, whose residual MLP "
            "leaves no place to fold a projection into; train with the projections frozen "
            "(stages[].freeze: [projections]) to export to SigLIP"
        )
    used: set[str] = {"visual_proj.weight", "visual_proj.bias", "ordered_proj", "text_proj.weight"}
    used |= {"logit_scale", "logit_bias"}

    def take(key: str) -> Tensor:
        used.add(key)
        return state[key]

    out: dict[str, Tensor] = {}
    for k in state:
        if k.startswith(text_prefix):
            out["text_model." + k[len(text_prefix) :]] = take(k)
    proj = state["text_proj.weight"]  # (D, text width): P (W x + b) = (P W) x + P b
    out["text_model.head.weight"] = proj @ out["text_model.head.weight"]
    out["text_model.head.bias"] = proj @ out["text_model.head.bias"]
    emb = "vision_model.embeddings."
    out[emb + "patch_embedding.weight"] = deflate_patch_kernel(take("visual.patch_embed.proj.weight"))
    out[emb + "patch_embedding.bias"] = take("visual.patch_embed.proj.bias")
    out[emb + "position_embedding.weight"] = take("visual.pos_embed")[0]
    for part in ("weight", "bias"):
        out[f"vision_model.post_layernorm.{part}"] = take(f"visual.norm.{part}")
    for i in range(vision.depth):
        src, dst = f"visual.blocks.{i}.", f"vision_model.encoder.layers.{i}."
        for part in ("weight", "bias"):
            for x, w in zip("qkv", take(f"{src}attn.qkv.{part}").chunk(3, dim=0)):
                out[f"{dst}self_attn.{x}_proj.{part}"] = w
            for theirs, ours in _BLOCK.items():
                out[f"{dst}{theirs}.{part}"] = take(f"{src}{ours}.{part}")
    head = "vision_model.head."
    out[head + "probe"] = take("visual.attn_pool.latent")
    for part in ("weight", "bias"):
        q, kv = take(f"visual.attn_pool.q.{part}"), take(f"visual.attn_pool.kv.{part}")
        out[f"{head}attention.in_proj_{part}"] = torch.cat([q, kv], dim=0)
        for theirs, ours in _HEAD.items():
            out[f"{head}{theirs}.{part}"] = take(f"visual.attn_pool.{ours}.{part}")
    scale = state["logit_scale"].clamp(max=math.log(max_logit_scale))
    out["logit_scale"] = scale.reshape(1)
    # a softmax-trained model has no bias: 0 keeps SigLIP's logits its scaled cosines
    out["logit_bias"] = state.get("logit_bias", torch.zeros(())).reshape(1).to(scale.dtype)
    left_out = sorted(k for k in state if k not in used)
    config = {
        "text_config": {
            **{k: v for k, v in text_config.items() if k != "model_type"},
            "projection_size": embed_dim,
        },
        "vision_config": {
            **image_tower_config(vision),
            "vision_use_head": True,
        },
    }
    return out, config, left_out
