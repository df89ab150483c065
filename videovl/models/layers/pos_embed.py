"""Resampling learned position embeddings to a new spatial grid or a new number of temporal positions."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
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
    grid = rearrange(pos.float(), "1 (h w) d -> 1 d h w", h=h, w=w)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=True)
    return rearrange(grid, "1 d h w -> 1 (h w) d").to(pos.dtype)


def resample_temporal(pos: Tensor, length: int) -> Tensor:
    """(1, T, D) temporal position embeddings -> (1, length, D) by linear interpolation over time."""
    if pos.shape[1] == length:
        return pos
    line = rearrange(pos.float(), "1 t d -> 1 d t")
    line = F.interpolate(line, size=length, mode="linear", align_corners=False)
    return rearrange(line, "1 d t -> 1 t d").to(pos.dtype)
