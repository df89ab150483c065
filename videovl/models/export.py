"""Exporting a videovl model's towers back to the formats they come from.

- ``clip``: a transformers ``CLIPModel`` folder (both towers, projections, temperature), or a
  ``MetaClip2Model`` one when the text tower is MetaCLIP 2's (the same layout, its own text pooling);
- ``siglip``: a transformers ``SiglipModel`` folder (both towers, scale and bias; the text projection
  folded into the text head, the visual one must be the identity);
- ``timm``: a timm ``VisionTransformer`` state dict of the visual tower;
- ``timesformer``: a transformers ``TimesformerModel`` folder of a divided (or joint) visual tower;
- ``videoprism``: a transformers ``VideoPrismVisionModel`` folder of a factorised visual tower (the
  backbone; joint blocks and pooling head left out);
- ``vjepa2``: a transformers ``VJEPA2Model`` folder of a V-JEPA 2 tower, its encoder alone (videovl keeps
  no predictor: transformers starts one afresh when it loads the folder).

CLIP, SigLIP and timm hold image models: the tubelet kernel is summed over time (what the encoder applies
to an image) and the temporal branch is left out; each export returns the keys it left out, so callers can
say so. The weights go through the pure converters of ``videovl.models.convert`` and are loaded strictly into
the other library's model before it saves them.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from videovl.config import ConfigError
from videovl.models.convert import deflate_patch_kernel
from videovl.models.convert.clip import CLIP_LAYOUT_FAMILIES, videovl_to_clip
from videovl.models.convert.siglip import videovl_to_siglip
from videovl.models.convert.timesformer import videovl_to_timesformer
from videovl.models.convert.videoprism import videovl_to_videoprism
from videovl.models.convert.vjepa2 import videovl_to_vjepa2
from videovl.models.model import VideoLanguageModel
from videovl.models.pretrained import text_prefix

__all__ = [
    "EXPORT_FORMATS",
    "export_clip",
    "export_siglip",
    "export_timm",
    "export_timesformer",
    "export_vjepa2",
    "export",
]

EXPORT_FORMATS = ("clip", "siglip", "timm", "timesformer", "vjepa2", "videoprism")


def _refuse_unexportable(model: VideoLanguageModel, fmt: str) -> None:
    """Every format's patch embedding reads the frames alone: a tower that also reads residual frames has
    twice its input channels, so no format holds it. Nor has any format layers between the text tower and
    its projection: a model with a text adapter would export other sentence vectors than it computes."""
    if model.text_adapter is not None and fmt in ("clip", "siglip"):
        raise ConfigError(
            f"cannot export to {fmt}: the model has {len(model.text_adapter.blocks)} text adapter layer(s) "
            f"(model.text_adapter_layers) between its text tower and projection, which {fmt} has no place for"
        )
    if model.visual.cfg.residual_frames != "none":
        raise ConfigError(
            f"cannot export to {fmt}: the visual tower reads residual frames (model.vision.residual_frames), "
            f"{2 * model.visual.cfg.in_chans} input channels where every export format's patch embedding has "
            f"{model.visual.cfg.in_chans}"
        )


def export_clip(model: VideoLanguageModel, folder: str | Path) -> list[str]:
    """Write ``folder`` as a ``CLIPModel``, or a ``MetaClip2Model`` for a MetaCLIP 2 text tower
    (config.json, model.safetensors); returns the keys left out."""
    _refuse_unexportable(model, "clip")
    import transformers

    state, config, left_out, kind = videovl_to_clip(
        model.state_dict(), model.visual.cfg, model.text.hf_config(), model.cfg.embed_dim, text_prefix(model)
    )
    name = CLIP_LAYOUT_FAMILIES[kind][0]  # "CLIPModel": its config class is "CLIPConfig"
    config_class = getattr(transformers, name.removesuffix("Model") + "Config")
    clip = getattr(transformers, name)(config_class(**config))
    clip.load_state_dict(state, strict=True)
    clip.save_pretrained(folder)
    return left_out


def export_siglip(model: VideoLanguageModel, folder: str | Path) -> list[str]:
    """Write ``folder`` as a ``SiglipModel`` (config.json, model.safetensors); returns the keys left out."""
    _refuse_unexportable(model, "siglip")
    from transformers import SiglipConfig, SiglipModel

    state, config, left_out = videovl_to_siglip(
        model.state_dict(),
        model.visual.cfg,
        model.text.hf_config(),
        model.cfg.embed_dim,
        text_prefix(model),
        model.cfg.max_logit_scale,
    )
    siglip = SiglipModel(SiglipConfig(**config))
    siglip.load_state_dict(state, strict=True)
    siglip.save_pretrained(folder)
    return left_out


def timm_state_dict(model: VideoLanguageModel) -> tuple[dict[str, Tensor], list[str]]:
    """The visual tower as a timm ViT state dict (timm's names are the encoder's), and the keys left out."""
    _refuse_unexportable(model, "timm")
    temporal = {n for n, _ in model.visual.named_temporal_parameters()}
    state = {k: v for k, v in model.visual.state_dict().items() if k not in temporal}
    if "pos_embed" not in state:
        raise ConfigError(
            "a visual tower without a learned position table (sinusoidal or none) has no timm ViT equivalent"
        )
    v = model.visual.cfg
    if v.rope != "none" or v.map_class_token:
        raise ConfigError(
            "a visual tower with rotary positions or a MAP head over the class token (Perception Encoder's) "
            "has no timm VisionTransformer equivalent"
        )
    if v.joint_depth or v.map_width is not None or not v.map_mlp or v.map_query_scale:
        raise ConfigError(
            "a visual tower with joint blocks after its norm or VideoPrism's pooling head (joint_depth, "
            "map_width, map_mlp: false, map_query_scale) has no timm VisionTransformer equivalent"
        )
    state["patch_embed.proj.weight"] = deflate_patch_kernel(state["patch_embed.proj.weight"])
    return state, sorted(f"visual.{k}" for k in temporal)


def export_timm(model: VideoLanguageModel, file: str | Path) -> list[str]:
    """Write the visual tower as a timm ViT state dict (safetensors); returns the keys left out."""
    from safetensors.torch import save_file

    state, left_out = timm_state_dict(model)
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    return left_out


def export_timesformer(model: VideoLanguageModel, folder: str | Path) -> list[str]:
    """Write the visual tower as a ``TimesformerModel`` folder; nothing of the tower is left out."""
    _refuse_unexportable(model, "timesformer")
    from transformers import TimesformerConfig, TimesformerModel

    state, config = videovl_to_timesformer(model.visual.state_dict(), model.visual.cfg)
    tsf = TimesformerModel(TimesformerConfig(**config))
    tsf.load_state_dict(state, strict=True)
    tsf.save_pretrained(folder)
    return []


def export_vjepa2(model: VideoLanguageModel, folder: str | Path) -> list[str]:
    """Write the visual tower as a ``VJEPA2Model`` folder holding the encoder's weights only (no predictor:
    ``VJEPA2Model.from_pretrained`` reports its keys as missing and initialises them, as for any new head);
    returns the keys left out (a MAP head's, videovl's own pooling)."""
    _refuse_unexportable(model, "vjepa2")
    from transformers import VJEPA2Config, VJEPA2Model

    state, config, left_out = videovl_to_vjepa2(model.visual.state_dict(), model.visual.cfg)
    vjepa2 = VJEPA2Model(VJEPA2Config(**config))
    vjepa2.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items()}, strict=True)
    vjepa2.save_pretrained(folder, state_dict=vjepa2.encoder.state_dict(prefix="encoder."))
    return [f"visual.{k}" for k in left_out]


def export_videoprism(model: VideoLanguageModel, folder: str | Path) -> list[str]:
    """Write the visual tower as a ``VideoPrismVisionModel`` folder; returns the keys left out (joint blocks
    and pooling head, which the backbone does not hold)."""
    _refuse_unexportable(model, "videoprism")
    from transformers import VideoPrismVisionConfig, VideoPrismVisionModel

    state, config, left_out = videovl_to_videoprism(model.visual.state_dict(), model.visual.cfg)
    backbone = VideoPrismVisionModel(VideoPrismVisionConfig(**config))
    backbone.load_state_dict(state, strict=True)
    backbone.save_pretrained(folder)
    return [f"visual.{k}" for k in left_out]


def export(model: VideoLanguageModel, fmt: str, out: str | Path) -> list[str]:
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format '{fmt}' is not one of {EXPORT_FORMATS}")
    writers = {
        "clip": export_clip,
        "siglip": export_siglip,
        "timm": export_timm,
        "timesformer": export_timesformer,
        "vjepa2": export_vjepa2,
        "videoprism": export_videoprism,
    }
    return writers[fmt](model, out)
