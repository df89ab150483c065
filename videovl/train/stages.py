"""Per-stage settings of the model: freezing (OmniVL's decoupled image-then-joint schedule freezes or
trains parts by stage) and token dropping (FLIP-style masking, with its seeded generator)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from videovl.config import FREEZABLE, ConfigError, StageConfig, not_one_of
from videovl.models.layers import num_kept

__all__ = ["check_freeze", "apply_freeze", "check_masking", "masking_args"]


def check_freeze(freeze: list[str], text_unlocked_layers: int = 0, where: str = "stages[]") -> None:
    """Raise a ConfigError naming the key under ``where`` (``stages.2``) when a stage's ``freeze`` or
    ``text_unlocked_layers`` cannot apply."""
    for j, part in enumerate(freeze):
        if part not in FREEZABLE:
            raise not_one_of(f"{where}.freeze[{j}]", part, FREEZABLE)
    if text_unlocked_layers < 0 or text_unlocked_layers and "text" not in freeze:
        raise ConfigError(
            f"{where}.text_unlocked_layers is {text_unlocked_layers}; it must be >= 0 and needs 'text' in "
            "the stage's freeze (it unlocks the last layers of a locked text tower)"
        )


def apply_freeze(model: nn.Module, freeze: list[str], text_unlocked_layers: int = 0) -> dict[str, int]:
    """Make exactly the parts in ``freeze`` untrainable (everything else trainable); returns counts.

    With "text" in ``freeze``, ``text_unlocked_layers`` > 0 keeps the text tower's last that many layers
    trainable (``TextEncoder.lock``). A fully frozen tower of a :class:`VideoLanguageModel` then runs in
    eval mode while the model trains."""
    check_freeze(freeze, text_unlocked_layers)  # a cheap guard for callers other than the checked loop
    for p in model.parameters():
        p.requires_grad_(True)
    if "visual" in freeze:
        model.visual.requires_grad_(False)
    if "text" in freeze:
        model.text.requires_grad_(False)
        if text_unlocked_layers:
            model.text.lock(text_unlocked_layers)
    if "projections" in freeze:  # the joint space: with visual and text frozen, a linear probe
        for p in (*model.visual_proj.parameters(), *model.text_proj.parameters(), model.logit_scale):
            p.requires_grad_(False)
        for extra in ("ordered_proj", "logit_bias", "text_adapter"):
            if getattr(model, extra, None) is not None:
                getattr(model, extra).requires_grad_(False)
    if "text_adapter" in freeze and model.text_adapter is not None:
        model.text_adapter.requires_grad_(False)
    if "temporal" in freeze:
        for p in model.visual.temporal_parameters():
            p.requires_grad_(False)
    model.train(model.training)  # a model that keeps locked towers in eval mode re-reads what is locked
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "frozen": sum(p.numel() for p in model.parameters()) - trainable}


def check_masking(visual: nn.Module, stage: StageConfig, index: int, image_size: int) -> None:
    """Raise a ConfigError naming the stage when its masking cannot run on ``visual`` at ``image_size``."""
    ratios = stage.mask_ratio
    if ratios.video == 0 and ratios.image == 0:
        return
    where = f"stages.{index} ('{stage.name}')"
    try:
        visual.mask_tube(stage.mask_tube)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    side = image_size // visual.cfg.patch_size
    for kind in ("video", "image"):
        ratio = getattr(ratios, kind)
        if ratio > 0 and num_kept(side * side, ratio) == 0:
            raise ConfigError(
                f"{where}: mask_ratio.{kind} is {ratio}, which keeps no patch token of a frame's "
                f"{side}x{side} grid (image size {image_size}, patch {visual.cfg.patch_size}); expected at "
                f"most {1 - 1 / (side * side):.4g}"
            )


def masking_args(
    stage: StageConfig, modality: str, seed: int, step: int, micro: int, rank: int
) -> dict[str, Any]:
    """Keyword arguments of ``encode_video`` for one training micro-batch: the stage's ratio for the
    batch's modality and a generator seeded from (seed, step, micro-step, rank), so a resumed run drops
    the same tokens and each process its own. Empty when the stage does not mask."""
    ratio = getattr(stage.mask_ratio, modality)
    if ratio == 0:
        return {}
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])
    )
    return {"mask_ratio": ratio, "mask_tube": stage.mask_tube, "generator": generator}
