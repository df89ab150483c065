"""SigLIP's pairwise sigmoid loss, multi-positive, over the global batch, one rank's chunk at a time.

Every (text ``i``, video ``j``) pair is a binary question: ``-log sigmoid(z_ij * (scale * cos_ij + bias))``
with ``z_ij = +1`` for positives (the same pair, label, caption or video, as in
:func:`~videovl.losses.contrastive.positive_mask`) and ``-1`` otherwise, summed over the global batch's
``N x N`` pairs and divided by ``N`` (SigLIP's normalisation). No row competes with another, so unlike
InfoNCE the loss splits into blocks that need not exist at the same time.

With ``world_size > 1`` each rank scores its own texts against the videos of every rank, chunk by chunk
(SigLIP's chunked variant): blocks of (local batch x one rank's batch), never the (local x global) matrix
at once, and no rank scores the texts of another. The rank's part is scaled by ``world_size`` before the
gradient average of DDP / Accelerate, and the videos are gathered with gradients (whose backward sums
over ranks), which together give exactly the single-process gradient; the returned value is the global
loss, the same on every rank (``tests/test_distributed_losses.py`` checks both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videovl.distributed import gather_no_grad, gather_with_grad, process_position
from videovl.losses.contrastive import positive_block

__all__ = ["sigmoid_loss", "SigmoidContrastiveLoss"]


def _block_loss(logits: Tensor, positives: Tensor) -> Tensor:
    """Sum over a block of ``-log sigmoid(+-logits)``: +1 on positives, -1 elsewhere."""
    signs = positives.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum()


def sigmoid_loss(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    *,
    label_ids: Tensor | None = None,
    text_hash: Tensor | None = None,
    video_ids: Tensor | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Tensor]:
    """``video`` and ``text`` (B, D) L2-normalised, row ``i`` one pair; ``logit_scale`` the multiplier
    (exp of the learnt log-scale), ``logit_bias`` the learnt bias. Returns ``{"contrastive_loss"}``."""
    rank, world_size = process_position(rank, world_size)
    ids = (label_ids, text_hash, video_ids)
    n_local, device = text.shape[0], text.device
    sizes = [n_local]
    videos, col_ids = video, ids
    if world_size > 1:
        sizes = gather_no_grad(torch.tensor([n_local], device=device)).tolist()
        videos = gather_with_grad(video)  # (N, D): the backward sums every rank's gradient of its part
        col_ids = tuple(None if i is None else gather_no_grad(i) for i in ids)
    total = sum(sizes)
    row_start = sum(sizes[:rank])
    text = text.float()  # a bf16 logsigmoid summed over N^2 pairs loses the loss's last digits
    part = text.new_zeros(())
    col_start = 0
    for size in sizes:  # one rank's videos at a time: a (B_local, B_s) block
        cols = slice(col_start, col_start + size)
        logits = logit_scale * text @ videos[cols].float().t() + logit_bias
        block_ids = tuple(None if i is None else i[cols] for i in col_ids)
        positives = positive_block(ids, block_ids, row_start, col_start, (n_local, size), device)
        part = part + _block_loss(logits, positives)
        col_start += size
    part = part / total
    if world_size == 1:
        return {"contrastive_loss": part}
    # value: the global loss (every rank's part summed); gradient: world_size x this rank's part
    value = gather_no_grad(part.detach().reshape(1)).sum()
    scaled = part * world_size
    return {"contrastive_loss": scaled + (value - scaled).detach()}


class SigmoidContrastiveLoss(nn.Module):
    """Module form of :func:`sigmoid_loss` (the sigmoid counterpart of ``ContrastiveLoss``)."""

    def forward(
        self,
        video: Tensor,
        text: Tensor,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float,
        **ids_and_ranks,
    ) -> dict[str, Tensor]:
        """Keyword arguments: ``label_ids``, ``text_hash``, ``video_ids``, ``rank``, ``world_size``."""
        return sigmoid_loss(video, text, logit_scale, logit_bias, **ids_and_ranks)
