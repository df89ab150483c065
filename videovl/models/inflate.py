"""Build the space-time :class:`VisualEncoder` from a timm 2D ViT (a model name and/or a local weights file).

The architecture is read from the timm model's attributes, the 2D patch kernel is inflated to a 3D
tubelet kernel, blocks are copied by name (the encoder uses timm's parameter names) and the position
embedding is resampled to the configured image size. Only timm's public API is used, and never with
``pretrained=True``: weights come from ``cfg.timm_checkpoint``, so this works offline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from videovl.config import ACTIVATIONS, INFLATIONS, ConfigError, VisionConfig, not_one_of
from videovl.models.layers import resample_spatial
from videovl.models.visual import VisualEncoder

__all__ = ["from_timm", "create_timm_vit", "inflate_patch_kernel", "load_weights_file"]


def inflate_patch_kernel(weight: Tensor, tubelet_size: int, how: str = "centre") -> Tensor:
    """(D, C, p, p) 2D kernel -> (D, C, tubelet_size, p, p).

    Either way a clip of identical frames embeds exactly as the image: ``"centre"`` puts the kernel on
    the middle frame (zeros elsewhere), ``"mean"`` spreads it evenly, ``weight / tubelet_size`` per frame.
    """
    if how not in INFLATIONS:
        raise not_one_of("model.vision.inflation", how, INFLATIONS)
    if how == "mean":
        return (weight / tubelet_size).unsqueeze(2).repeat(1, 1, tubelet_size, 1, 1)
    out = weight.new_zeros(*weight.shape[:2], tubelet_size, *weight.shape[2:])
    out[:, :, tubelet_size // 2] = weight
    return out


def load_weights_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``: no pickled code runs).
    A checkpoint that wraps its weights under ``"state_dict"`` or ``"model"`` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.vision.timm_checkpoint: {path} does not exist (give a local weights file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


def create_timm_vit(cfg: VisionConfig, **create_kwargs: Any) -> nn.Module:
    """``timm.create_model(cfg.timm_model)`` without a head and without downloading, then the weights of
    ``cfg.timm_checkpoint`` if given. ``create_kwargs`` (``img_size=...``, ``depth=...``) go to timm."""
    if not cfg.timm_model:
        raise ConfigError(
            "model.vision.timm_model is not set: name the timm architecture "
            "(e.g. 'vit_base_patch16_clip_224') that timm_checkpoint holds weights for"
        )
    import timm

    model = timm.create_model(cfg.timm_model, pretrained=False, num_classes=0, **create_kwargs)
    if cfg.timm_checkpoint:
        state = {k: v for k, v in load_weights_file(cfg.timm_checkpoint).items() if not k.startswith("head.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ConfigError(
                f"model.vision.timm_checkpoint {cfg.timm_checkpoint} does not fit timm model "
                f"'{cfg.timm_model}' (is it the checkpoint of another architecture or image size?): {e}"
            ) from e
    return model


def _act_name(act: nn.Module) -> str:
    import timm.layers

    if isinstance(act, nn.GELU):
        return "gelu" if act.approximate == "none" else "gelu_tanh"
    for cls, name in ((timm.layers.GELU, "gelu"), (timm.layers.GELUTanh, "gelu_tanh")):
        if isinstance(act, cls):
            return name
    if isinstance(act, timm.layers.QuickGELU):
        return "quick_gelu"
    raise ConfigError(
        f"the timm model's MLP activation {type(act).__name__} has no videovl equivalent "
        f"(videovl has {sorted(ACTIVATIONS)})"
    )


def vision_config_from_timm(model: nn.Module, cfg: VisionConfig) -> VisionConfig:
    """``cfg`` with its architecture fields replaced by the timm model's; the space-time fields (image
    size, frames, tubelet, attention, pool, inflation, drop path) stay as configured."""
    name = type(model).__name__
    needed = ("patch_embed", "blocks", "pos_embed", "norm", "norm_pre", "embed_dim", "cls_token")
    missing = [a for a in needed if not hasattr(model, a)]
    if missing:
        raise ConfigError(f"timm model {name} lacks {missing}: from_timm takes timm VisionTransformer models")
    if getattr(model, "num_reg_tokens", 0):
        raise ConfigError(
            f"timm model {name} has {model.num_reg_tokens} register tokens; videovl supports none"
        )
    if not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity) or isinstance(
        model.norm, nn.Identity
    ):
        raise ConfigError(
            f"timm model {name} normalises after pooling (fc_norm); videovl needs a final token norm"
        )
    if model.pos_embed is None:
        raise ConfigError(f"timm model {name} has no learned position embedding")
    blk, width = model.blocks[0], model.embed_dim
    if not all(hasattr(blk.mlp, a) for a in ("fc1", "act", "fc2")):
        raise ConfigError(
            f"timm model {name} has a {type(blk.mlp).__name__} MLP; videovl supports fc1-act-fc2"
        )
    ph, pw = model.patch_embed.patch_size
    if ph != pw:
        raise ConfigError(f"timm model {name} has a non-square {ph}x{pw} patch; videovl needs square patches")
    return dataclasses.replace(
        cfg,
        patch_size=ph,
        in_chans=model.patch_embed.proj.in_channels,
        width=width,
        depth=len(model.blocks),
        heads=blk.attn.num_heads,
        mlp_ratio=blk.mlp.fc1.out_features / width,
        qkv_bias=blk.attn.qkv.bias is not None,
        class_token=model.cls_token is not None,
        pre_norm=not isinstance(model.norm_pre, nn.Identity),
        norm_eps=model.norm.eps,
        act=_act_name(blk.mlp.act),
        qk_norm=not isinstance(blk.attn.q_norm, nn.Identity),
        layer_scale=getattr(blk.ls1, "init_values", 1.0) if hasattr(blk.ls1, "gamma") else None,
    )


def from_timm(cfg: VisionConfig, model: nn.Module | None = None, **create_kwargs: Any) -> VisualEncoder:
    """A :class:`VisualEncoder` holding a timm ViT's weights: ``model`` if given, else the one
    ``cfg.timm_model`` / ``cfg.timm_checkpoint`` name (``create_kwargs`` go to ``timm.create_model``).

    The temporal branches start as TimeSformer's do: their attention copies the block's spatial
    attention and norm, their output projection is zero, so the result still computes the image model.
    """
    if model is None:
        model = create_timm_vit(cfg, **create_kwargs)
    elif cfg.timm_checkpoint or create_kwargs:
        raise ConfigError(
            "from_timm: pass a timm model, or timm_checkpoint/create kwargs to build one, not both"
        )
    cfg = vision_config_from_timm(model, cfg)
    encoder = VisualEncoder(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    state["patch_embed.proj.weight"] = inflate_patch_kernel(
        state["patch_embed.proj.weight"], cfg.tubelet_size, cfg.inflation
    )
    pos = state["pos_embed"]
    if getattr(model, "no_embed_class", False):  # no class position (DeiT-III): a zero one is the same
        prefix, patches = pos.new_zeros(1, encoder.num_prefix, pos.shape[-1]), pos
    else:
        prefix, patches = pos[:, : encoder.num_prefix], pos[:, encoder.num_prefix :]
    patches = resample_spatial(patches, tuple(model.patch_embed.grid_size), encoder.grid)
    state["pos_embed"] = torch.cat([prefix, patches], dim=1)
    for i in range(cfg.depth) if cfg.attention == "divided" else ():
        for part in ("qkv", "q_norm", "k_norm"):
            for k in [k for k in state if k.startswith(f"blocks.{i}.attn.{part}.")]:
                state[k.replace(".attn.", ".temporal_attn.")] = state[k]
        for k in [k for k in state if k.startswith(f"blocks.{i}.norm1.")]:
            state[k.replace(".norm1.", ".temporal_norm.")] = state[k]
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected:
        raise ConfigError(
            f"timm model {type(model).__name__} has weights videovl has no place for: {unexpected}"
        )
    missing = [k for k in missing if k not in dict(encoder.named_temporal_parameters())]
    if missing:
        raise ConfigError(f"timm model {type(model).__name__} lacks weights videovl needs: {missing}")
    return encoder
