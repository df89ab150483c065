"""Losses over features: tensors in, a dict of named ``*_loss`` parts out (never a model)."""

from videovl.losses.caption import caption_loss
from videovl.losses.contrastive import (
    ContrastiveLoss,
    FrameContrastiveLoss,
    frame_contrastive_loss,
    positive_block,
    positive_mask,
    soft_target_infonce,
)
from videovl.losses.itm import itm_loss, sample_hard_negatives
from videovl.losses.sigmoid import SigmoidContrastiveLoss, sigmoid_loss

__all__ = [
    "ContrastiveLoss",
    "FrameContrastiveLoss",
    "SigmoidContrastiveLoss",
    "caption_loss",
    "frame_contrastive_loss",
    "itm_loss",
    "positive_block",
    "positive_mask",
    "sample_hard_negatives",
    "sigmoid_loss",
    "soft_target_infonce",
]
