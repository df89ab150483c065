"""Token dropping for training (FLIP, PatchDropout): keep a random subset of patch tokens per clip.

Pure functions of (batch, grid, ratio, generator): the caller owns the generator, so a run that seeds it
from (seed, step, rank) draws the same positions again on resume, and the encoder holds no training state.

Tokens stay a (B, T, K, D) grid with the same number K of kept positions in every frame, for both
attention modes: divided attention needs it (temporal attention runs over one spatial position across
frames), and it gives every frame tokens of its own for its frame feature. ``tube=True`` keeps one set
of spatial positions in every frame (tube masking, the only choice for divided attention);
``tube=False`` draws each frame's positions independently (random space-time masking, joint attention).
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor

__all__ = ["num_kept", "keep_indices", "gather_kept"]


def num_kept(tokens: int, ratio: float) -> int:
    """Patch tokens a frame keeps out of ``tokens`` when ``ratio`` of them are dropped (FLIP's floor)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1), got {ratio}")
    return int(tokens * (1.0 - ratio) + 1e-9)  # 1e-9: 196 * (1 - 0.75) must give 49, not 48


def keep_indices(
    batch: int, frames: int, tokens: int, ratio: float, generator: torch.Generator | None, tube: bool
) -> Tensor:
    """Sorted indices (B, T, K) of the spatial positions each frame of each clip keeps.

    Drawn on the generator's device (the CPU for a default ``torch.Generator()``) so the draw does not
    depend on where the model runs; move the result to the tokens' device.
    """
    keep = num_kept(tokens, ratio)
    if keep == 0:
        raise ValueError(f"mask ratio {ratio} keeps no patch token of {tokens} per frame")
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(batch, 1 if tube else frames, tokens, generator=generator, device=device)
    # the K positions with the smallest noise, in (h, w) order so kept tokens keep the raster order
    idx = noise.argsort(dim=-1)[..., :keep].sort(dim=-1).values
    return idx.expand(batch, frames, keep) if tube else idx


def gather_kept(x: Tensor, idx: Tensor) -> Tensor:
    """Patch tokens (B, T, N, D) -> the kept ones (B, T, K, D) at indices (B, T, K)."""
    return x.gather(2, repeat(idx.to(x.device), "b t k -> b t k d", d=x.shape[-1]))
