"""Similarity between sentences and clips: global, frame-level (fine-grained) and word-to-frame.

All functions take L2-normalised embeddings and return a ``(num_texts, num_videos)`` matrix of cosine-like
scores (no temperature); callers scale by ``logit_scale``. Shapes:
``text`` (Nt, D), ``video`` (Nv, D), ``frames`` (Nv, T, D), ``words`` (Nt, L, D) with ``word_mask`` (Nt, L).
"""

from __future__ import annotations

import torch
from torch import Tensor

from videovl.config import AGGREGATIONS

__all__ = ["global_similarity", "frame_similarity", "word_frame_similarity", "aggregate"]


def global_similarity(text: Tensor, video: Tensor) -> Tensor:
    return text @ video.t()


def aggregate(scores: Tensor, how: str, temperature: float = 0.1, dim: int = -1) -> Tensor:
    """Reduce per-frame scores along ``dim``.

    ``softmax`` weights each frame by ``softmax(score / temperature)``, so the frames that match the
    sentence dominate while every frame still receives gradient (max gives gradient to one frame only).
    """
    if how == "mean":
        return scores.mean(dim)
    if how == "max":
        return scores.amax(dim)
    if how == "softmax":
        weights = torch.softmax(scores / temperature, dim=dim)
        return (weights * scores).sum(dim)
    raise ValueError(f"frame aggregation '{how}' is not one of {AGGREGATIONS}")


def frame_similarity(text: Tensor, frames: Tensor, how: str = "softmax", temperature: float = 0.1) -> Tensor:
    """Each sentence against every temporal position of every clip, then aggregated over time."""
    scores = torch.einsum("nd,mtd->nmt", text, frames)  # (Nt, Nv, T)
    return aggregate(scores, how, temperature)


def word_frame_similarity(
    words: Tensor, word_mask: Tensor, frames: Tensor, how: str = "softmax", temperature: float = 0.1
) -> Tensor:
    """Token-level matching: every word against every frame; aggregate over frames for each word, then
    over the sentence's real (unmasked) words, and symmetrically frames over words; average both."""
    scores = torch.einsum("nld,mtd->nmlt", words, frames)  # (Nt, Nv, L, T)
    mask = word_mask[:, None, :].to(scores.dtype)  # (Nt, 1, L)
    word_to_video = aggregate(scores, how, temperature, dim=-1)  # (Nt, Nv, L)
    t2v = (word_to_video * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    masked = scores.masked_fill(word_mask[:, None, :, None] == 0, float("-inf") if how != "mean" else 0.0)
    if how == "mean":
        frame_to_text = masked.sum(2) / mask.sum(-1, keepdim=True).clamp_min(1)  # (Nt, Nv, T)
    elif how == "max":
        frame_to_text = masked.amax(2)
    else:
        weights = torch.softmax(masked / temperature, dim=2)
        frame_to_text = (weights * scores).sum(2)
    v2t = frame_to_text.mean(-1)
    return (t2v + v2t) / 2
