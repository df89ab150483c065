"""Multi-head self-attention over the second-to-last axis, with any number of leading batch axes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from videovl.models.layers.rope import apply_rope

__all__ = ["Attention", "attend"]

# On a CPU, SDPA's fused kernel in bf16 / fp16 is slower than the plain product for short key sequences
# (the demo's 4 temporal and 17 spatial positions: forward + backward 2.5-7.5x slower; at 197 keys 1.3x;
# at 1,568 the fused kernel wins, 2.2x): below this many keys a half-precision CPU attention is computed
# in the open, its softmax in fp32. GPUs and fp32 always take SDPA.
OPEN_ATTENTION_MAX_KEYS = 256


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    causal: bool = False,
    softcap: float | None = None,
) -> Tensor:
    """Softmax attention of ``q`` (..., L, e) over ``k``, ``v`` (..., S, e): ``scaled_dot_product_attention``,
    or the same product computed in the open (see ``OPEN_ATTENTION_MAX_KEYS``; always with ``softcap``,
    logits capped at +-softcap by a tanh). ``mask`` broadcasts to (..., L, S), True where a query may
    attend; ``causal``: query i attends to keys <= i (with no ``mask``)."""
    half = q.dtype in (torch.bfloat16, torch.float16)
    open_form = q.device.type == "cpu" and half and k.shape[-2] <= OPEN_ATTENTION_MAX_KEYS
    if softcap is None and not open_form:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if mask is None and causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v


class Attention(nn.Module):
    """Fused qkv projection, optional per-head q/k LayerNorm, then :func:`attend` (SDPA, or the product
    computed in the open: short half-precision sequences on a CPU, and ``softcap``, attention logits
    capped at +-softcap by a tanh).

    ``x`` is (..., L, D): every leading axis is a batch axis, so the same module attends over space
    (input ``b t n d``) or over time (input ``b n t d``, a permuted view) without its caller flattening.
    Parameter names (``qkv``, ``q_norm``, ``k_norm``, ``proj``) match timm's ViT attention.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        self.softcap = softcap
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}; pick heads that divide it")
        self.heads = heads
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``rope``: rotary (cos, sin) tables for the queries and keys, each (L, head_dim) or
        (*lead, L, head_dim) with ``x``'s leading axes (a token dropped per sample has its own rows)."""
        lead, (length, dim) = x.shape[:-2], x.shape[-2:]
        # One batch axis for SDPA: a view for contiguous input; a permuted view (time) is copied here once,
        # which the qkv matmul would otherwise do itself.
        x = x.reshape(-1, length, dim)
        q, k, v = rearrange(self.qkv(x), "b l (three h e) -> three b h l e", three=3, h=self.heads).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # (L, e) broadcasts over (b, h); per-sample tables get a head axis
            cos, sin = (r if r.ndim == 2 else r.reshape(-1, 1, length, r.shape[-1]) for r in rope)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attend(q, k, v, softcap=self.softcap)  # (b, h, l, e)
        out = self.proj(rearrange(out, "b h l e -> b l (h e)"))
        return out.reshape(*lead, length, dim)
