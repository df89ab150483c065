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

Export back to ``SiglipModel`` is left out: a trained model's projections are no longer the identity, and
SigLIP has no place for them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import add_temporal_branch, image_tower_fields, text_tower_fields
from videovl.models.layers import resample_spatial

__all__ = ["siglip_model_fields", "siglip_to_videovl"]

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
