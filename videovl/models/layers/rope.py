"""2D rotary position embeddings (RoPE) over a frame's patch grid, as EVA-02 and Perception Encoder use them.

Each pair of a head's channels (2i, 2i+1) is rotated by an angle proportional to one coordinate of the
token: the first half of the pairs by one axis, the second half by the other (``axes``), each half at the
frequencies ``temperature ** (-j / (head_dim / 4))``, j < head_dim / 4. Queries and keys rotated this way
score by their relative position. Coordinates are patch indices plus ``offset``; with a reference grid they
are rescaled to it (index / size * reference), so a grid of another size spans the same range of angles.

Tables are computed in float32 on the fly (a few thousand angles): the encoder holds no buffer, and any grid
and dtype work alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rope_tables", "apply_rope"]


def rope_tables(
    grid: tuple[int, int],
    head_dim: int,
    temperature: float = 10000.0,
    reference: tuple[int, int] | None = None,
    offset: float = 0.0,
    axes: str = "xy",
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (rows * columns, head_dim) in raster (row, column) order, float32: the rotation of
    each patch token of a ``grid`` (rows, columns)."""
    if head_dim % 4:
        raise ValueError(f"2D rotary positions need a head width divisible by 4, got {head_dim}")
    bands = head_dim // 4
    freqs = 1.0 / temperature ** (torch.arange(bands, device=device, dtype=torch.float32) / bands)
    coords = []
    for size, ref in zip(grid, reference or (None, None)):
        c = torch.arange(size, device=device, dtype=torch.float32) + offset
        coords.append(c / size * ref if ref is not None else c)
    rows, cols = torch.meshgrid(*coords, indexing="ij")  # (H, W) each
    first, second = (cols, rows) if axes == "xy" else (rows, cols)
    # (H, W, 2, bands) -> (N, head_dim / 2) angles, then each angle for both channels of its pair
    angles = (torch.stack([first, second], dim=-1).unsqueeze(-1) * freqs).flatten(-2).flatten(0, 1)
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (x[2i], x[2i+1]) of ``x`` (..., L, head_dim) by the tables' angles (broadcast
    against ``x``); the result keeps ``x``'s dtype."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (-x1, x0, -x3, x2, ...)
    return (x * cos + rotated * sin).to(x.dtype)
