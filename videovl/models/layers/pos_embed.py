"""Resampling learned position embeddings to a new spatial grid or a new number of temporal positions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["resample_spatial", "resample_temporal"]


def resample_spatial(pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """(1, h*w, D) patch position embeddings on ``old_grid`` -> (1, h'*w', D) on ``new_grid``.

    Bicubic with antialiasing in float32, as timm resamples ViT position embeddings, so a resized
    checkpoint matches what timm itself would build. Prefix (class) positions are not passed here.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    h, w = old_grid
    if pos.shape[1] != h * w:
        raise ValueError(f"position embedding has {pos.shape[1]} entries, not {h}x{w} = {h * w} for its grid")
    # Plain reshapes rather than einops: ``pos`` is often a Parameter, and einops would register that type
    # as a new backend while a compiled tower runs, which its guards see as a change (a recompilation).
    grid = pos.float().reshape(1, h, w, -1).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=True)
    return grid.flatten(2).transpose(1, 2).to(pos.dtype)


def resample_temporal(pos: Tensor, length: int) -> Tensor:
    """(1, T, D) temporal position embeddings -> (1, length, D) by linear interpolation over time."""
    if pos.shape[1] == length:
        return pos
    line = F.interpolate(pos.float().transpose(1, 2), size=length, mode="linear", align_corners=False)
    return line.transpose(1, 2).to(pos.dtype)  # (see resample_spatial for why not einops)
