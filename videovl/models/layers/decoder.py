"""Transformer decoder block: pre-norm self-attention, cross-attention to a memory sequence, MLP; and the
encoder block (no cross-attention) of the text adapter.

Shared by the alignment (ITM) head, where self-attention is bidirectional, and the caption decoder, where
it is causal. Text is right-padded: ``mask`` is ``(B, L)`` with 1 for real tokens. The memory (visual
tokens) is already projected to the block's width; ``memory_mask`` is ``(B, N)`` and optional.

Generation recomputes the whole prefix at every step instead of keeping a key/value cache: captions are
short (tens of tokens), and the block stays free of cache bookkeeping and beam reordering.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from videovl.models.layers.attention import attend

__all__ = ["DecoderBlock", "EncoderBlock", "self_attention_mask", "init_weights"]


def init_weights(module: nn.Module) -> None:
    """BERT/GPT-style init (std 0.02): with PyTorch's N(0, 1) embedding default, a tied LM head would
    start with logits of magnitude ~sqrt(width)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def self_attention_mask(mask: Tensor | None, length: int, causal: bool) -> Tensor | None:
    """Boolean ``(B, 1, L, L)`` mask, True where a query may attend, or None when SDPA's own causal (or
    unmasked) path is enough.

    Every query may also attend to itself: a padded query then never has an all-False row (which some
    SDPA backends and versions turn into NaN), and real queries attend to themselves anyway.
    """
    if mask is None:
        return None
    eye = torch.eye(length, dtype=torch.bool, device=mask.device)
    keep = mask.bool()[:, None, None, :] | eye  # (B, 1, L, L)
    if causal:
        keep = keep & torch.ones_like(eye).tril()
    return keep


class _Attention(nn.Module):
    """Multi-head attention of queries ``x`` over ``context`` (``x`` itself for self-attention)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} is not divisible by heads {heads}; choose a divisor")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.heads)
        k, v = rearrange(self.kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        out = attend(q, k, v, mask=mask, causal=causal)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class DecoderBlock(nn.Module):
    """``x + SelfAttn(LN(x))``, then ``x + CrossAttn(LN(x), memory)``, then ``x + MLP(LN(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = _Attention(width, heads)
        self.norm3 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self, x: Tensor, memory: Tensor, mask: Tensor | None = None, memory_mask: Tensor | None = None
    ) -> Tensor:
        """``x`` (B, L, W), ``memory`` (B, N, W) -> (B, L, W)."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, self_attention_mask(mask, x.shape[1], self.causal), self.causal)
        cross_mask = None if memory_mask is None else memory_mask.bool()[:, None, None, :]  # (B, 1, 1, N)
        x = x + self.cross_attn(self.norm2(x), memory, cross_mask)
        return x + self.mlp(self.norm3(x))


class EncoderBlock(nn.Module):
    """``x + SelfAttn(LN(x))``, then ``x + MLP(LN(x))``, bidirectional over a right-padded ``mask``.

    ``zero_init``: the attention's and the MLP's output maps start at zero, so the block starts as the
    identity and training moves it away from the states it is given (the text adapter over a locked
    tower starts from the tower's own sentence vectors)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, zero_init: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.apply(init_weights)
        if zero_init:
            for out in (self.self_attn.proj, self.mlp[-1]):
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, L, W), ``mask`` (B, L) 1 for real tokens -> (B, L, W)."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, self_attention_mask(mask, x.shape[1], False))
        return x + self.mlp(self.norm2(x))
