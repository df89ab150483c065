"""Video-text matching (ITM) with hard negatives sampled from the contrastive similarities (ALBEF / BLIP).

The negatives come from the *gathered* batch (``ContrastiveLoss``'s ``logits_t2v``), not only the local one:
a larger pool holds harder negatives. A positive -- the pair itself, another caption of the same video, a
sample with the same label or the same text -- is never drawn, or the matching head would be taught that
matching pairs do not match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sample_hard_negatives", "itm_loss"]


def _sample_rows(
    logits: Tensor, positives: Tensor, generator: torch.Generator | None, uniform: float
) -> Tensor:
    """(N, N) logits, (N, N) bool -> (N,) one column per row drawn from softmax(logits) over its negatives,
    mixed with the uniform distribution over them in the share ``uniform``."""
    masked = logits.float().masked_fill(positives, float("-inf"))
    empty = positives.all(1)  # rows that have no negative at all
    # Softmax over the negatives only: proportional to softmax over the full row, but it cannot underflow
    # to an all-zero row when a positive's logit dwarfs the others (logit_scale 100 spans 200 logits).
    probs = masked.masked_fill(empty[:, None], 0.0).softmax(1)
    if uniform > 0:
        flat = (~positives).float()
        flat = flat / flat.sum(1, keepdim=True).clamp_min(1.0)
        probs = (1 - uniform) * probs + uniform * flat.masked_fill(empty[:, None], 1.0 / flat.shape[1])
    picks = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return picks.masked_fill(empty, -1)


@torch.no_grad()
def sample_hard_negatives(
    sim: Tensor, positives: Tensor, generator: torch.Generator | None = None, uniform: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Draw one hard negative per text and per video of the gathered batch.

    ``sim`` (N, N) holds text-to-video logits (row = text, column = video; pass the *scaled* similarities,
    e.g. ``ContrastiveLoss``'s ``logits_t2v``, since the softmax temperature sets how hard the draws are);
    ``positives`` (N, N) bool from :func:`positive_mask`. Each draw follows ``softmax(sim)`` restricted to
    the row's negatives, so the probability of a negative is its softmax weight renormalised.

    ``uniform`` in [0, 1] mixes that distribution with the uniform one over the row's negatives (0:
    ALBEF's draws exactly). Once the dual encoder is good, nearly every hard negative is a near-duplicate
    of the positive (same digit, reversed motion), and an alignment head trained from scratch on those
    alone can sit at the class prior for hundreds of steps; a share of easy negatives lets it start.

    Returns ``(neg_video_for_text (N,), neg_text_for_video (N,))``, indices into the gathered batch.
    A row with no negative at all (the whole global batch shares its label or caption) gets ``-1``: drop
    those pairs, e.g. ``keep = neg_video_for_text >= 0``, since ``-1`` would otherwise index the last sample.
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or positives.shape != sim.shape:
        raise ValueError(
            f"sim and positives must both be square (N, N); got {tuple(sim.shape)} and "
            f"{tuple(positives.shape)}"
        )
    if not 0.0 <= uniform <= 1.0:
        raise ValueError(
            f"uniform must lie in [0, 1] (the share of uniformly drawn negatives), got {uniform}"
        )
    return (
        _sample_rows(sim, positives, generator, uniform),
        _sample_rows(sim.t(), positives.t(), generator, uniform),
    )


def itm_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Two-way matching classification: ``logits`` (M, 2), ``labels`` (M,) with 1 = matching pair,
    0 = hard negative (ALBEF's convention). Returns ``{"itm_loss"}``, the mean cross-entropy."""
    return {"itm_loss": F.cross_entropy(logits.float(), labels.long())}
