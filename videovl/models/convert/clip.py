"""CLIP: transformers' ``CLIPModel`` layout <-> videovl's, and the open_clip / OpenAI layout -> transformers'.

MetaCLIP 2 (``MetaClip2Model``) has CLIP's layout, key for key; the one difference is its text tower, which
pools the first end-of-text token by id (``MetaClip2TextModel``), where transformers' ``CLIPTextModel``
takes the highest id when ``eos_token_id`` is 2 (its old rule, and MetaCLIP 2's XLM-R end-of-text id). Each
family keeps its own text model, named in :data:`CLIP_LAYOUT_FAMILIES`.

The text tower stays transformers' own ``CLIPTextModel`` inside :class:`~videovl.models.text.TextEncoder`
(so its causal mask and end-of-text pooling are transformers' code), which makes the text side a prefix
rename. The visual side maps onto the space-time ViT:

=========================================================  =================================================
transformers ``CLIPModel``                                 videovl
=========================================================  =================================================
vision_model.embeddings.patch_embedding.weight (D,C,p,p)   visual.patch_embed.proj.weight (D,C,t,p,p) inflated
vision_model.embeddings.class_embedding (D,)               visual.cls_token (1, 1, D)
vision_model.embeddings.position_embedding.weight (1+N,D)  visual.pos_embed (1, 1+N, D)
vision_model.pre_layrnorm / post_layernorm                 visual.norm_pre / visual.norm
...layers.i.self_attn.{q,k,v}_proj                         visual.blocks.i.attn.qkv (concatenated q, k, v)
...layers.i.self_attn.out_proj                             visual.blocks.i.attn.proj
...layers.i.layer_norm1 / layer_norm2 / mlp.fc1 / mlp.fc2  visual.blocks.i.norm1 / norm2 / mlp.fc1 / mlp.fc2
visual_projection.weight, text_projection.weight           visual_proj.weight, text_proj.weight
logit_scale                                                logit_scale
text_model.*                                               text.model.*
=========================================================  =================================================

CLIP's post-norm is applied to the class token only; videovl's final norm is applied to every token, which
gives the same pooled (class) output.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from videovl.config import ConfigError, VisionConfig
from videovl.models.convert import (
    act_to_hf,
    add_temporal_branch,
    deflate_patch_kernel,
    image_tower_config,
    image_tower_fields,
    text_tower_fields,
)
from videovl.models.layers import resample_spatial

__all__ = [
    "CLIP_LAYOUT_FAMILIES",
    "clip_model_fields",
    "clip_to_videovl",
    "videovl_to_clip",
    "openclip_heads",
    "openclip_to_clip",
    "openclip_text_to_clip",
    "openclip_text_config",
    "OPENAI_MARKERS",
]

# Scalars OpenAI's own checkpoints carry beside the weights (the open_clip layout otherwise).
OPENAI_MARKERS = ("input_resolution", "context_length", "vocab_size")

# transformers model_type of a joint model in CLIP's layout -> (its model class, its text tower's model_type)
CLIP_LAYOUT_FAMILIES = {
    "clip": ("CLIPModel", "clip_text_model"),
    "metaclip_2": ("MetaClip2Model", "metaclip_2_text_model"),
}

_BLOCK = {  # transformers CLIP encoder layer -> videovl block, for the parts that are plain renames
    "self_attn.out_proj": "attn.proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}

_OPENCLIP_BLOCK = {  # open_clip residual block -> transformers CLIP encoder layer, the plain renames
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def clip_model_fields(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The ModelConfig fields a ``CLIPConfig`` or ``MetaClip2Config`` (as a dict, with its ``model_type``)
    fixes: the towers' architecture, the joint width, the text tower's config (the family's own text
    model) and CLIP's pooling and context length."""
    v, t = config["vision_config"], config["text_config"]
    kind = config.get("model_type", "clip")
    if kind not in CLIP_LAYOUT_FAMILIES:
        raise ConfigError(
            f"{where}: model_type '{kind}' is not one of CLIP's layout ({sorted(CLIP_LAYOUT_FAMILIES)})"
        )
    return {
        "embed_dim": config["projection_dim"],
        "vision": image_tower_fields(v, where, class_token=True, pre_norm=True),
        "text": text_tower_fields(t, CLIP_LAYOUT_FAMILIES[kind][1]),
    }


def clip_to_videovl(
    state: dict[str, Tensor], vision: VisionConfig, text_prefix: str = "text.model."
) -> dict[str, Tensor]:
    """A ``CLIPModel`` (or ``MetaClip2Model``) state dict -> a videovl state dict for a model built with
    ``vision`` (the resolved vision config: tubelet, inflation, attention and image size decide the visual
    weights).
    ``text_prefix``: where the text tower's CLIPTextModel keeps its weights (transformers 4 nests them
    one level deeper, under ``text_model.``)."""
    from videovl.models.inflate import inflate_patch_kernel

    out: dict[str, Tensor] = {}
    rest = dict(state)
    rest.pop("vision_model.embeddings.position_ids", None)  # a buffer some versions save
    rest.pop("text_model.embeddings.position_ids", None)
    for k in [k for k in rest if k.startswith("text_model.")]:
        out[text_prefix + k[len("text_model.") :]] = rest.pop(k)
    emb = "vision_model.embeddings."
    out["visual.patch_embed.proj.weight"] = inflate_patch_kernel(
        rest.pop(emb + "patch_embedding.weight"), vision.tubelet_size, vision.inflation
    )
    out["visual.cls_token"] = rest.pop(emb + "class_embedding").reshape(1, 1, -1)
    pos = rest.pop(emb + "position_embedding.weight").unsqueeze(0)  # (1, 1 + N, D)
    old = math.isqrt(pos.shape[1] - 1)
    new = vision.image_size // vision.patch_size
    out["visual.pos_embed"] = torch.cat([pos[:, :1], resample_spatial(pos[:, 1:], (old, old), (new, new))], 1)
    for ours, theirs in (("norm_pre", "pre_layrnorm"), ("norm", "post_layernorm")):
        for part in ("weight", "bias"):
            out[f"visual.{ours}.{part}"] = rest.pop(f"vision_model.{theirs}.{part}")
    for i in range(vision.depth):
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual.blocks.{i}."
        for part in ("weight", "bias"):
            q, k, v = (rest.pop(f"{src}self_attn.{x}_proj.{part}") for x in "qkv")
            out[f"{dst}attn.qkv.{part}"] = torch.cat([q, k, v], dim=0)
            for theirs, ours in _BLOCK.items():
                out[f"{dst}{ours}.{part}"] = rest.pop(f"{src}{theirs}.{part}")
    out["visual_proj.weight"] = rest.pop("visual_projection.weight")
    out["text_proj.weight"] = rest.pop("text_projection.weight")
    out["logit_scale"] = rest.pop("logit_scale")
    if rest:
        raise ConfigError(f"CLIP weights videovl has no place for: {sorted(rest)[:5]} ({len(rest)} in all)")
    # an image model knows no time: the temporal embedding starts at zero (joint attention has it too)
    out["visual.temporal_embed"] = torch.zeros(1, vision.num_frames // vision.tubelet_size, vision.width)
    if vision.attention == "divided":
        out = add_temporal_branch(out, vision.depth, prefix="visual.")
    return out


def videovl_to_clip(
    state: dict[str, Tensor],
    vision: VisionConfig,
    text_config: dict[str, Any],
    embed_dim: int,
    text_prefix: str = "text.model.",
) -> tuple[dict[str, Tensor], dict[str, Any], list[str], str]:
    """A videovl state dict -> (state dict, config kwargs, the keys left out, the family's model_type) of
    the CLIP-layout family its text tower comes from: ``CLIPModel`` / ``CLIPConfig``, or
    ``MetaClip2Model`` / ``MetaClip2Config`` (:data:`CLIP_LAYOUT_FAMILIES`).

    CLIP holds the image path only: the temporal branch and embedding are left out (and listed), as are
    the heads; the tubelet kernel is summed over time, which is what the encoder applies to an image."""
    needs = {
        "class_token": True,
        "pre_norm": True,
        "qkv_bias": True,
        "qk_norm": False,
        "layer_scale": None,
        "pos_embed": "learned",
        "final_norm": "tokens",
        "pool": "cls",
        "rope": "none",
    }
    wrong = {k: getattr(vision, k) for k, v in needs.items() if getattr(vision, k) != v}
    text_types = {text: kind for kind, (_, text) in CLIP_LAYOUT_FAMILIES.items()}
    kind = text_types.get(text_config.get("model_type"))
    if wrong or kind is None:
        fits = {k: needs[k] for k in wrong}
        raise ConfigError(
            f"this model does not fit CLIP's layout: vision fields {wrong} (CLIP needs {fits}), text tower "
            f"'{text_config.get('model_type')}' (CLIP needs one of {sorted(text_types)})"
        )
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.startswith(text_prefix):
            out["text_model." + k[len(text_prefix) :]] = v
    emb = "vision_model.embeddings."
    out[emb + "patch_embedding.weight"] = deflate_patch_kernel(state["visual.patch_embed.proj.weight"])
    out[emb + "class_embedding"] = state["visual.cls_token"].reshape(-1)
    out[emb + "position_embedding.weight"] = state["visual.pos_embed"][0]
    for ours, theirs in (("norm_pre", "pre_layrnorm"), ("norm", "post_layernorm")):
        for part in ("weight", "bias"):
            out[f"vision_model.{theirs}.{part}"] = state[f"visual.{ours}.{part}"]
    for i in range(vision.depth):
        src, dst = f"visual.blocks.{i}.", f"vision_model.encoder.layers.{i}."
        for part in ("weight", "bias"):
            for x, w in zip("qkv", state[f"{src}attn.qkv.{part}"].chunk(3, dim=0)):
                out[f"{dst}self_attn.{x}_proj.{part}"] = w
            for theirs, ours in _BLOCK.items():
                out[f"{dst}{theirs}.{part}"] = state[f"{src}{ours}.{part}"]
    out["visual_projection.weight"] = state["visual_proj.weight"]
    out["text_projection.weight"] = state["text_proj.weight"]
    out["logit_scale"] = state["logit_scale"]
    used = {"visual.patch_embed.proj.weight", "visual.cls_token", "visual.pos_embed", "visual_proj.weight"}
    used |= {"text_proj.weight", "logit_scale"}
    used |= {f"visual.{n}.{p}" for n in ("norm_pre", "norm") for p in ("weight", "bias")}
    left_out = [
        k
        for k in state
        if not k.startswith("text.model.")
        and k not in used
        and not any(
            k.startswith(f"visual.blocks.{i}.{n}.")
            for i in range(vision.depth)
            for n in ("attn.qkv", "attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2")
        )
    ]
    config = {
        "projection_dim": embed_dim,
        "text_config": {k: v for k, v in text_config.items() if k != "model_type"},
        "vision_config": {
            **image_tower_config(vision),
        },
        "logit_scale_init_value": float(state["logit_scale"]),
    }
    return out, config, left_out, kind


def openclip_heads(model_cfg: dict[str, Any], where: str) -> tuple[int, int]:
    """(vision head width, text head count) from open_clip's model config (a ``model_configs/*.json``,
    or the ``model_cfg`` of a hub folder's ``open_clip_config.json``), with open_clip's own defaults (64
    and 8) for the keys it leaves out, as open_clip builds the model."""
    cfg = model_cfg.get("model_cfg", model_cfg)
    if not isinstance(cfg.get("vision_cfg"), dict) or not isinstance(cfg.get("text_cfg"), dict):
        raise ConfigError(
            f"{where} is not an open_clip model config: it needs 'vision_cfg' and 'text_cfg' sections "
            f"(its keys: {sorted(cfg)[:8]})"
        )
    return int(cfg["vision_cfg"].get("head_width", 64)), int(cfg["text_cfg"].get("heads", 8))


def _openclip_blocks(rest: dict[str, Tensor], out: dict[str, Tensor], src: str, dst: str) -> int:
    """Move open_clip residual blocks ``src{i}.*`` from ``rest`` to CLIP encoder layers ``dst{i}.*``."""
    n = 0
    while f"{src}{n}.ln_1.weight" in rest:
        s, d = f"{src}{n}.", f"{dst}{n}."
        for part in ("weight", "bias"):
            for x, w in zip("qkv", rest.pop(f"{s}attn.in_proj_{part}").chunk(3, dim=0)):
                out[f"{d}self_attn.{x}_proj.{part}"] = w
            for theirs, ours in _OPENCLIP_BLOCK.items():
                out[f"{d}{ours}.{part}"] = rest.pop(f"{s}{theirs}.{part}")
        n += 1
    return n


def _norm(rest: dict[str, Tensor], out: dict[str, Tensor], src: str, dst: str) -> None:
    for part in ("weight", "bias"):
        out[f"{dst}.{part}"] = rest.pop(f"{src}.{part}")


def openclip_text_to_clip(rest: dict[str, Tensor], out: dict[str, Tensor], prefix: str = "") -> None:
    """Move open_clip's text tower (``TextTransformer``: its keys under ``prefix``, "" in ``CLIP``, "text."
    in ``CustomTextCLIP``) from ``rest`` into ``out`` in ``CLIPModel``'s layout (``text_model.*`` and
    ``text_projection.weight``)."""
    out["text_model.embeddings.token_embedding.weight"] = rest.pop(f"{prefix}token_embedding.weight")
    out["text_model.embeddings.position_embedding.weight"] = rest.pop(f"{prefix}positional_embedding")
    _openclip_blocks(rest, out, f"{prefix}transformer.resblocks.", "text_model.encoder.layers.")
    _norm(rest, out, f"{prefix}ln_final", "text_model.final_layer_norm")
    out["text_projection.weight"] = rest.pop(f"{prefix}text_projection").t()


def openclip_text_config(state: dict[str, Tensor], heads: int, act: str) -> dict[str, Any]:
    """The ``CLIPTextConfig`` kwargs of an open_clip text tower already in ``CLIPModel``'s layout (``state``
    from :func:`openclip_text_to_clip`), with its ``heads`` and activation (videovl's name), which the
    weights do not record."""
    vocab, width = state["text_model.embeddings.token_embedding.weight"].shape
    if width % heads:
        raise ConfigError(
            f"open_clip text width {width} is not divisible by {heads} heads; check the model config"
        )
    depth = 0
    while f"text_model.encoder.layers.{depth}.layer_norm1.weight" in state:
        depth += 1
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": depth,
        "num_attention_heads": heads,
        "max_position_embeddings": state["text_model.embeddings.position_embedding.weight"].shape[0],
        "hidden_act": act_to_hf(act),
        "layer_norm_eps": 1e-5,
        # CLIP's BPE puts start- and end-of-text last; open_clip pools at the highest id, which is
        # the first end-of-text token in any text its tokenizer wrote.
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "pad_token_id": vocab - 1,
    }


def openclip_to_clip(
    state: dict[str, Tensor], act: str, vision_head_width: int, text_heads: int
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An open_clip / OpenAI ViT CLIP state dict -> (``CLIPModel`` state dict, ``CLIPConfig`` kwargs).

    The file records neither the activation (``act``: videovl's name) nor the head counts: the visual
    tower has ``width // vision_head_width`` heads (64 for OpenAI's and open_clip's B and L models, 80 for
    ViT-H/14, 88 for g/14, 104 for bigG/14) and the text tower ``text_heads``. Wrong counts still fit every
    shape, so the caller must know them (open_clip's model config, :func:`openclip_heads`)."""
    rest = {k: v for k, v in state.items() if k not in (*OPENAI_MARKERS, "attn_mask")}
    out: dict[str, Tensor] = {}
    patch = rest.pop("visual.conv1.weight")
    vw, vpos = patch.shape[0], rest.pop("visual.positional_embedding")
    emb = "vision_model.embeddings."
    out[emb + "patch_embedding.weight"] = patch
    out[emb + "class_embedding"] = rest.pop("visual.class_embedding")
    out[emb + "position_embedding.weight"] = vpos
    _norm(rest, out, "visual.ln_pre", "vision_model.pre_layrnorm")
    vdepth = _openclip_blocks(rest, out, "visual.transformer.resblocks.", "vision_model.encoder.layers.")
    _norm(rest, out, "visual.ln_post", "vision_model.post_layernorm")
    out["visual_projection.weight"] = rest.pop("visual.proj").t()
    openclip_text_to_clip(rest, out)
    out["logit_scale"] = rest.pop("logit_scale")
    if rest:
        raise ConfigError(
            f"open_clip weights videovl has no place for: {sorted(rest)[:5]} ({len(rest)} in all); "
            "videovl reads the plain ViT CLIP layout (no attentional pooling, layer scale or custom text)"
        )
    if vw % vision_head_width:
        raise ConfigError(
            f"open_clip head sizes do not divide the widths: visual width {vw} by head width "
            f"{vision_head_width}; check the model config"
        )
    config = {
        "projection_dim": out["visual_projection.weight"].shape[0],
        "vision_config": {
            "hidden_size": vw,
            "intermediate_size": out["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": vdepth,
            "num_attention_heads": vw // vision_head_width,
            "num_channels": patch.shape[1],
            "patch_size": patch.shape[-1],
            "image_size": math.isqrt(vpos.shape[0] - 1) * patch.shape[-1],
            "hidden_act": act_to_hf(act),
            "layer_norm_eps": 1e-5,
        },
        "text_config": openclip_text_config(out, text_heads, act),
        "logit_scale_init_value": float(out["logit_scale"]),
    }
    return out, config
