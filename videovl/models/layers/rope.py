"""Rotary position embeddings (RoPE): 2D over a frame's patch grid, as EVA-02 and Perception Encoder use
them, and 3D over a clip's (time, row, column) grid, as V-JEPA 2 uses them.

Each pair of a head's channels (2i, 2i+1) is rotated by an angle proportional to one coordinate of the
token: the first half of the pairs by one axis, the second half by the other (``axes``), each half at the
frequencies ``temperature ** (-j / (head_dim / 4))``, j < head_dim / 4. Queries and keys rotated this way
score by their relative position. Coordinates are patch indices plus ``offset``; with a reference grid they
are rescaled to it (index / size * reference), so a grid of another size spans the same range of angles.

In 3D (:func:`rope_tables_3d`) a head's channels fall in three chunks of ``2 * (head_dim // 6)`` channels,
time first, then the two spatial axes in ``axes`` order; the channels left over are not rotated. Within a
chunk of ``c`` channels the ``c / 2`` frequencies ``temperature ** (-j / (c / 2))`` are laid out twice in
a row (channel i takes frequency i mod c/2), while the rotation still pairs channels (2i, 2i+1): V-JEPA 2's
layout, which its checkpoints were trained with.

Tables are computed in float32 on the fly (a few thousand angles): the encoder holds no buffer, and any grid
and dtype work alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rope_tables", "rope_tables_3d", "apply_rope"]


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


def rope_tables_3d(
    frames: int,
    grid: tuple[int, int],
    head_dim: int,
    temperature: float = 10000.0,
    reference: tuple[int, int] | None = None,
    offset: float = 0.0,
    axes: str = "yx",
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (frames, rows * columns, head_dim) float32: the rotation of each patch token of a
    clip of ``frames`` temporal positions on a ``grid`` (rows, columns), (t, h, w) order."""
    chunk = 2 * (head_dim // 6)
    if chunk == 0:
        raise ValueError(f"3D rotary positions need a head width of at least 6, got {head_dim}")
    half = chunk // 2
    freqs = 1.0 / temperature ** (torch.arange(half, device=device, dtype=torch.float32) / half)
    freqs = freqs.repeat(2)  # (chunk,): [f_0 .. f_{half-1}, f_0 .. f_{half-1}]
    coords = [torch.arange(frames, device=device, dtype=torch.float32) + offset]
    for size, ref in zip(grid, reference or (None, None)):
        c = torch.arange(size, device=device, dtype=torch.float32) + offset
        coords.append(c / size * ref if ref is not None else c)
    t, rows, cols = torch.meshgrid(*coords, indexing="ij")  # (T, H, W) each
    spatial = (cols, rows) if axes == "xy" else (rows, cols)
    angles = torch.cat([c.unsqueeze(-1) * freqs for c in (t, *spatial)], dim=-1)  # (T, H, W, 3 * chunk)
    rest = head_dim - 3 * chunk  # channels left unrotated: angle 0
    angles = torch.cat([angles, angles.new_zeros(*angles.shape[:-1], rest)], dim=-1).flatten(1, 2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (x[2i], x[2i+1]) of ``x`` (..., L, head_dim) by the tables' angles (broadcast
    against ``x``); the result keeps ``x``'s dtype."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (-x1, x0, -x3, x2, ...)
    return (x * cos + rotated * sin).to(x.dtype)
