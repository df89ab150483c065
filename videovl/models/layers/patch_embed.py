"""3D patch embedding: non-overlapping tubelets of ``tubelet_size`` frames x ``patch`` x ``patch`` pixels."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["PatchEmbed3D"]


class PatchEmbed3D(nn.Module):
    """(B, C, T, H, W) -> (B, T', H', W', D) with T' = T / tubelet_size, H' = H / patch, W' = W / patch.

    The weight lives in a ``Conv3d`` (the layout 2D checkpoints inflate into), but since the stride equals
    the kernel the convolution is one matmul over flattened tubelets; on CPU that matmul is about twice as
    fast as ``conv3d`` and it yields the channels-last layout the transformer wants without a permute.
    """

    def __init__(
        self, patch_size: int, tubelet_size: int, in_chans: int, dim: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.patch_size, self.tubelet_size, self.in_chans = patch_size, tubelet_size, in_chans
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=kernel, stride=kernel, bias=bias)

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise a ValueError naming the numbers when a (B, C, T, H, W) shape cannot be cut into tubelets."""
        if len(shape) != 5:
            raise ValueError(f"expected videos (B, C, T, H, W), got a tensor of shape {tuple(shape)}")
        _, c, t, h, w = shape
        p, ts = self.patch_size, self.tubelet_size
        if c != self.in_chans:
            raise ValueError(f"expected {self.in_chans} channels, got {c} (videos are (B, C, T, H, W))")
        if t % ts:
            raise ValueError(
                f"{t} frames are not divisible by tubelet_size {ts}; sample a multiple of {ts} frames"
            )
        for side in (h, w):
            if side % p:
                raise ValueError(
                    f"image size {side} is not divisible by patch size {p}; resize or crop to a multiple "
                    f"of {p} (e.g. {max(p, side - side % p)})"
                )

    def forward(self, x: Tensor) -> Tensor:
        self.check(tuple(x.shape))
        p, ts = self.patch_size, self.tubelet_size
        # (B, C, T, H, W) -> (B, T', H', W', C*ts*p*p), flattened in the conv weight's (c, t, h, w) order
        x = rearrange(x, "b c (t pt) (h ph) (w pw) -> b t h w (c pt ph pw)", pt=ts, ph=p, pw=p)
        return F.linear(x, self.proj.weight.flatten(1), self.proj.bias)  # (B, T', H', W', D)
