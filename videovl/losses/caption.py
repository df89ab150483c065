"""Captioning language-modelling loss (teacher forcing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["caption_loss"]


def caption_loss(
    logits: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    label_smoothing: float = 0.0,
    vocabulary: Tensor | None = None,
) -> dict[str, Tensor]:
    """``logits`` (B, L, V) from the decoder fed ``input_ids`` (B, L); ``logits[:, i]`` predicts
    ``input_ids[:, i + 1]``. Positions whose *target* is padding (``attention_mask == 0``) are ignored, and
    the mean is over the batch's real target tokens, so long captions weigh more than short ones (as in
    BLIP's decoder). ``logits`` may also come packed, (R, V): only the R positions whose target is real,
    in row-major order (``CaptionDecoder(..., positions=target_positions(mask))``); the loss is the same.
    ``vocabulary`` (K,) sorted token ids: the logits' last axis covers those tokens alone (the decoder's
    ``vocabulary=``), and every target must be one of them. Returns ``{"caption_loss"}`` (0 if the
    batch has no target token)."""
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
        )
    real = attention_mask[:, 1:].bool()  # (B, L-1)
    if logits.ndim == 2:  # packed
        if logits.shape[0] != int(real.sum()):
            raise ValueError(
                f"packed logits have {logits.shape[0]} rows but the batch has {int(real.sum())} real target "
                "tokens; pass the decoder positions=target_positions(attention_mask)"
            )
        logits, targets = logits.float(), input_ids[:, 1:][real]
    elif logits.shape[:2] == input_ids.shape:
        # Ignored targets contribute 0, whatever id the tokenizer pads with.
        logits = logits[:, :-1].flatten(0, 1).float()
        targets = input_ids[:, 1:].masked_fill(~real, -100).flatten()
    else:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be (B, L, V) with input_ids (B, L) = "
            f"{tuple(input_ids.shape)}, or packed (R, V)"
        )
    if vocabulary is not None:
        targets = _in_vocabulary(targets, vocabulary)
    total = F.cross_entropy(
        logits, targets, ignore_index=-100, reduction="sum", label_smoothing=label_smoothing
    )
    return {"caption_loss": total / real.sum().clamp_min(1)}


def _in_vocabulary(targets: Tensor, vocabulary: Tensor) -> Tensor:
    """Token ids -> their positions in the sorted ``vocabulary``; ignored targets (-100) stay so."""
    kept = targets != -100
    where = torch.searchsorted(vocabulary, targets.clamp_min(0)).clamp_max(len(vocabulary) - 1)
    outside = kept & (vocabulary[where] != targets)
    if bool(outside.any()):
        raise ValueError(
            f"caption token ids {sorted(set(targets[outside].tolist()))[:10]} are outside the decoder's "
            f"vocabulary of {len(vocabulary)} tokens (train.caption_vocab: corpus takes the tokens of the "
            "stage's texts; a text the stage did not list reached the loss)"
        )
    return torch.where(kept, where, targets)
