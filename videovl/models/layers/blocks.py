"""Transformer blocks: a plain pre-norm ViT block, and a space-time block for videos.

The space-time block carries patch tokens as (B, T, N, D) and the class token apart as (B, 1, D), so
each attention sees its sequence axis without the stream being re-laid out, and the image path
(T = 1) runs exactly the ViT block's arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["LayerScale", "DropPath", "Block", "SpaceTimeBlock", "BLOCK_MODES"]

# divided and joint: model.vision.attention's; space and time: the two stages of attention: factorised
BLOCK_MODES = ("divided", "joint", "space", "time")


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT / DeiT-III); parameter ``gamma`` as in timm."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples (axis 0).

    Tensors passed together share one draw, so a sample's class token and patch tokens drop together.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, *xs: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.p > 0 and self.training:
            keep = xs[0].new_empty(xs[0].shape[0]).bernoulli_(1 - self.p) / (1 - self.p)
            xs = tuple(x * keep.view(-1, *[1] * (x.ndim - 1)) for x in xs)
        return xs[0] if len(xs) == 1 else xs


class Block(nn.Module):
    """Pre-norm ViT block, parts injected: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Names (``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp``, ``ls2``) match timm's, so its weights load
    by name. ``norm_layer(dim)`` builds each norm.
    """

    def __init__(
        self,
        dim: int,
        attn: nn.Module,
        mlp: nn.Module,
        norm_layer: Callable[[int], nn.Module],
        layer_scale: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1, self.attn = norm_layer(dim), attn
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.norm2, self.mlp = norm_layer(dim), mlp
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def attn_branch(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if rope is None:  # an attention without rotary positions takes no such argument
            return self.ls1(self.attn(self.norm1(x)))
        return self.ls1(self.attn(self.norm1(x), rope))

    def mlp_branch(self, x: Tensor) -> Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn_branch(x))
        return x + self.drop_path(self.mlp_branch(x))


def _unrotated_prefix(rope: tuple[Tensor, Tensor], prefix: bool) -> tuple[Tensor, Tensor]:
    """The (cos, sin) tables (..., N, e) with a first row for the class token when ``prefix``: no rotation
    (cos 1, sin 0)."""
    if not prefix:
        return rope
    cos, sin = rope
    return (
        torch.cat([torch.ones_like(cos[..., :1, :]), cos], dim=-2),
        torch.cat([torch.zeros_like(sin[..., :1, :]), sin], dim=-2),
    )


class SpaceTimeBlock(Block):
    """ViT block over patch tokens ``x`` (B, T, N, D) and an optional class token ``cls`` (B, 1, D).

    ``mode="divided"`` (TimeSformer): attention over time at each spatial position, then attention over
    space within each frame, then the MLP. The temporal branch (``temporal_norm``, ``temporal_attn``) has
    its output projection initialised to zero, so a block fresh from a 2D checkpoint computes exactly the
    image block; it is skipped when T = 1. The class token does not take part in temporal attention; for
    spatial attention it is repeated into every frame and its T outputs are averaged back into one
    token, as in TimeSformer (with T = 1 the average is the single output, exactly the ViT).

    ``mode="joint"``: one attention over all T*N patch tokens and the class token.

    ``mode="space"`` and ``mode="time"``: the two stages of a factorised encoder (VideoPrism), blocks
    without a class token that attend within each frame, or over time at each spatial position.

    ``rope``: rotary (cos, sin) tables of the patch tokens, each (1 or B, 1 or T, N, head_dim), for the
    attention over space (divided, joint and space; the class token is not rotated); the temporal attention
    takes none.
    """

    def __init__(
        self,
        dim: int,
        attn: nn.Module,
        mlp: nn.Module,
        norm_layer: Callable[[int], nn.Module],
        layer_scale: float | None = None,
        drop_path: float = 0.0,
        mode: str = "divided",
        temporal_attn: nn.Module | None = None,
    ) -> None:
        super().__init__(dim, attn, mlp, norm_layer, layer_scale, drop_path)
        if mode not in BLOCK_MODES:
            raise ValueError(f"attention mode '{mode}' is not one of {BLOCK_MODES}")
        self.mode = mode
        if mode == "divided":
            if temporal_attn is None:
                raise ValueError("divided space-time attention needs a temporal_attn module")
            self.temporal_norm, self.temporal_attn = norm_layer(dim), temporal_attn
            self.zero_temporal()

    def zero_temporal(self) -> None:
        """Zero the temporal branch's output projection: the block then ignores time, as a 2D ViT does."""
        if self.mode == "divided":
            nn.init.zeros_(self.temporal_attn.proj.weight)
            nn.init.zeros_(self.temporal_attn.proj.bias)

    def forward(
        self, x: Tensor, cls: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        b, t, n, d = x.shape
        if self.mode in ("space", "time"):
            if cls is not None:
                raise ValueError("a factorised encoder's blocks take no class token")
            if self.mode == "space":
                rope = None if rope is None else tuple(r.expand(b, t, -1, -1) for r in rope)
                x = x + self.drop_path(self.attn_branch(x, rope))  # attention over n within each (b, t)
            else:
                h = rearrange(x, "b t n d -> b n t d")  # a view: time is the sequence
                x = x + self.drop_path(rearrange(self.attn_branch(h), "b n t d -> b t n d"))
            return x + self.drop_path(self.mlp_branch(x)), None
        if self.mode == "divided":
            if t > 1:
                h = rearrange(self.temporal_norm(x), "b t n d -> b n t d")  # a view: time is the sequence
                x = x + self.drop_path(rearrange(self.temporal_attn(h), "b n t d -> b t n d"))
            if rope is not None:  # (B, T, [1 +] N, e): each frame's own rows
                rope = tuple(r.expand(b, t, -1, -1) for r in _unrotated_prefix(rope, cls is not None))
            if cls is None:
                x = x + self.drop_path(self.attn_branch(x, rope))  # attention over n within each (b, t)
            else:
                seq = torch.cat([cls.unsqueeze(1).expand(b, t, 1, d), x], dim=2)  # (B, T, 1+N, D)
                # split, not indexing: the backward of two slices would build two full-size zero grads
                out_cls, out = self.drop_path(self.attn_branch(seq, rope)).split([1, n], dim=2)
                cls = cls + out_cls.mean(1)  # (B, 1, D): one token from T frame views
                x = x + out
        else:
            seq = rearrange(x, "b t n d -> b (t n) d")
            if cls is not None:
                seq = torch.cat([cls, seq], dim=1)  # (B, 1 + T*N, D)
            if rope is not None:  # every frame's tokens by their place in the frame: (B, [1 +] T*N, e)
                flat = tuple(rearrange(r.expand(b, t, -1, -1), "b t n e -> b (t n) e") for r in rope)
                rope = _unrotated_prefix(flat, cls is not None)
            out = self.drop_path(self.attn_branch(seq, rope))
            if cls is not None:
                out_cls, out = out.split([1, t * n], dim=1)
                cls = cls + out_cls
            x = x + rearrange(out, "b (t n) d -> b t n d", t=t)
        if cls is None:
            return x + self.drop_path(self.mlp_branch(x)), None
        dx, dc = self.drop_path(self.mlp_branch(x), self.mlp_branch(cls))
        return x + dx, cls + dc
