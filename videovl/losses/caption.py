"""Captioning language-modelling loss (teacher forcing)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["caption_loss"]


def caption_loss(
    logits: Tensor, input_ids: Tensor, attention_mask: Tensor, label_smoothing: float = 0.0
) -> dict[str, Tensor]:
    """``logits`` (B, L, V) from the decoder fed ``input_ids`` (B, L); ``logits[:, i]`` predicts
    ``input_ids[:, i + 1]``. Positions whose *target* is padding (``attention_mask == 0``) are ignored, and
    the mean is over the batch's real target tokens, so long captions weigh more than short ones (as in
    BLIP's decoder). Returns ``{"caption_loss"}`` (0 if the batch has no target token)."""
    if logits.shape[:2] != input_ids.shape or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be (B, L, V) with input_ids and attention_mask "
            f"(B, L); got input_ids {tuple(input_ids.shape)}, mask {tuple(attention_mask.shape)}"
        )
    real = attention_mask[:, 1:].bool()  # (B, L-1)
    # Ignored targets contribute 0, whatever id the tokenizer pads with.
    targets = input_ids[:, 1:].masked_fill(~real, -100)
    per_token = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=-100,
        reduction="none",
        label_smoothing=label_smoothing,
    )  # (B * (L-1),)
    loss = per_token.sum() / real.sum().clamp_min(1)
    return {"caption_loss": loss}
