"""Unified (multi-positive) video/image-text contrastive losses over the global batch.

OmniVL's unified contrastive learning: labelled data turned into text ("a video of juggling") sits in the
same batch as captioned data, so two samples with the same label, the same caption text or the same video are
positives of each other, not negatives. Each row's target is spread uniformly over its positives (soft
targets); with no duplicates this is exactly CLIP's InfoNCE.

Features are L2-normalised ``text`` (B, D), ``video`` (B, D) and per-frame ``frames`` (B, T, D); row ``i``
of every tensor is one (video, text) pair. ``logit_scale`` is the multiplier itself (``exp`` of the learned
log-scale, clamped by the model). With ``world_size > 1`` the features are gathered with gradients
(see :mod:`videovl.distributed` for why that gives the exact single-process gradient) and every rank
computes the same loss over the global batch of ``N = sum of local batch sizes`` pairs.

The id tensors must agree across processes: hash captions with a stable function (``zlib.crc32`` of the
normalised text, not Python's salted ``hash``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from videovl.distributed import gather_no_grad, gather_with_grad, process_position
from videovl.models.matching import frame_similarity, global_similarity

__all__ = [
    "positive_block",
    "positive_mask",
    "soft_target_infonce",
    "ContrastiveLoss",
    "frame_contrastive_loss",
    "FrameContrastiveLoss",
]


def positive_mask(
    label_ids: Tensor | None = None, text_hash: Tensor | None = None, *, video_ids: Tensor | None = None
) -> Tensor:
    """(N, N) bool: ``i`` and ``j`` are positives if ``i == j``, or they share a label id (ids < 0 mean
    "unlabelled" and match nothing), the same text hash, or the same video id (two captions of one clip)."""
    given = [t for t in (label_ids, text_hash, video_ids) if t is not None]
    if not given:
        raise ValueError(
            "positive_mask needs at least one of label_ids, text_hash, video_ids; with none the "
            "positives are just the diagonal: torch.eye(N, dtype=torch.bool)"
        )
    ids = (label_ids, text_hash, video_ids)
    return positive_block(ids, ids, 0, 0, given[0].shape[0], given[0].device)


def positive_block(
    rows: tuple[Tensor | None, ...],
    cols: tuple[Tensor | None, ...],
    row_start: int,
    col_start: int,
    shape: tuple[int, int] | int,
    device: torch.device,
) -> Tensor:
    """The (M, K) block of the global positive mask (see :func:`positive_mask`) whose rows are the global
    batch's items ``row_start ...`` and columns ``col_start ...``; ``rows`` / ``cols`` are their (label,
    text hash, video) ids, each None where not given. A block of a larger mask, so a loss that walks
    the batch in chunks never builds the whole (N, N) mask."""
    m, k = (shape, shape) if isinstance(shape, int) else shape
    row_index = torch.arange(row_start, row_start + m, device=device)
    mask = row_index[:, None] == torch.arange(col_start, col_start + k, device=device)[None, :]
    labels, label_cols = rows[0], cols[0]
    if labels is not None:
        mask |= (labels[:, None] == label_cols[None, :]) & (labels[:, None] >= 0)
    for r, c in zip(rows[1:], cols[1:], strict=True):
        if r is not None:
            mask |= r[:, None] == c[None, :]
    return mask


def _row_cross_entropy(logits: Tensor, positives: Tensor) -> Tensor:
    """(M, N) logits, (M, N) bool -> (M,) cross-entropy to uniform targets on each row's positives."""
    targets = positives.to(logits.dtype) / positives.sum(1, keepdim=True)
    return -(targets * logits.log_softmax(1)).sum(1)


def soft_target_infonce(logits: Tensor, positives: Tensor) -> Tensor:
    """Symmetric InfoNCE of square text-to-video ``logits`` (N, N) with multi-positive soft targets."""
    logits = logits.float()  # a bf16 log-softmax over thousands of columns loses the loss's last digits
    return (
        _row_cross_entropy(logits, positives).mean() + _row_cross_entropy(logits.t(), positives.t()).mean()
    ) / 2


def _global_batch(
    tensors: list[Tensor], ids: list[Tensor | None], rank: int | None, world_size: int | None
) -> tuple[list[Tensor], Tensor]:
    """Gather features (with grad) and ids (without) over ranks; return them and the (N, N) positive mask."""
    rank, world_size = process_position(rank, world_size)
    if world_size > 1:
        tensors = [gather_with_grad(t) for t in tensors]
        ids = [None if i is None else gather_no_grad(i) for i in ids]
    n = tensors[0].shape[0]
    if any(i is not None for i in ids):
        positives = positive_mask(ids[0], ids[1], video_ids=ids[2])
    else:
        positives = torch.eye(n, dtype=torch.bool, device=tensors[0].device)
    return tensors, positives


class ContrastiveLoss(nn.Module):
    """Symmetric multi-positive InfoNCE between clip and sentence embeddings over the global batch.

    Returns ``contrastive_loss`` (differentiable scalar), ``contrastive_neg_sim`` (detached mean cosine
    similarity of the negative pairs: nearest-neighbour batches should raise it), ``logits_t2v``
    (detached (N, N) scaled text-to-video similarities of the global batch) and ``positives`` (the (N, N)
    bool positive mask it used), both for hard-negative sampling.
    """

    def forward(
        self,
        video: Tensor,
        text: Tensor,
        logit_scale: Tensor | float,
        *,
        label_ids: Tensor | None = None,
        text_hash: Tensor | None = None,
        video_ids: Tensor | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> dict[str, Tensor]:
        """``rank`` / ``world_size`` default to the process group's (1 process without one); the loss
        is the same on every rank, so ``rank`` is only checked."""
        (video, text), positives = _global_batch(
            [video, text], [label_ids, text_hash, video_ids], rank, world_size
        )
        sim = global_similarity(text, video)  # (N, N): row = text, column = video
        logits = logit_scale * sim
        negatives = ~positives
        neg_sim = (sim.detach() * negatives).sum() / negatives.sum().clamp_min(1)
        return {
            "contrastive_loss": soft_target_infonce(logits, positives),
            "contrastive_neg_sim": neg_sim,
            "logits_t2v": logits.detach(),
            "positives": positives,
        }


def frame_contrastive_loss(
    frames: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    *,
    how: str = "softmax",
    temperature: float = 0.1,
    label_ids: Tensor | None = None,
    text_hash: Tensor | None = None,
    video_ids: Tensor | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Tensor]:
    """Fine-grained contrastive loss: each sentence ``text`` (B, D) against every temporal position of
    every clip ``frames`` (B, T, D) (visual side first, as in :class:`ContrastiveLoss`), aggregated over
    time by ``frame_similarity(how, temperature)``, then the same multi-positive InfoNCE over the global
    batch. Returns ``{"frame_loss"}``."""
    (frames, text), positives = _global_batch(
        [frames, text], [label_ids, text_hash, video_ids], rank, world_size
    )
    sim = frame_similarity(text, frames, how, temperature)  # (N, N): row = text, column = clip
    return {"frame_loss": soft_target_infonce(logit_scale * sim, positives)}


class FrameContrastiveLoss(nn.Module):
    """Module form of :func:`frame_contrastive_loss` with the temporal aggregation fixed at construction."""

    def __init__(self, how: str = "softmax", temperature: float = 0.1):
        super().__init__()
        self.how, self.temperature = how, temperature

    def forward(
        self, frames: Tensor, text: Tensor, logit_scale: Tensor | float, **ids_and_ranks
    ) -> dict[str, Tensor]:
        """Keyword arguments: ``label_ids``, ``text_hash``, ``video_ids``, ``rank``, ``world_size``."""
        return frame_contrastive_loss(
            frames, text, logit_scale, how=self.how, temperature=self.temperature, **ids_and_ranks
        )
