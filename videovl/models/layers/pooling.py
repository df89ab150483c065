"""Multi-head attention pooling (MAP): a learnt probe query attends over a token sequence (SigLIP's head).

Parameter names follow timm's ``AttentionPoolLatent``: latent, q, kv, proj, norm, mlp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from videovl.models.layers.mlp import Mlp

__all__ = ["AttentionPool"]


class AttentionPool(nn.Module):
    """A learnt probe, ``latent``, attends over the tokens (``q`` from it, ``kv`` from the tokens, ``proj``
    after), then a residual MLP on the pooled token: ``y = a + mlp(norm(a))``, ``a`` the attention output.

    ``x`` is (..., L, D) and the result (..., D): every leading axis is a batch axis, so the same head
    pools a whole clip (B, T*N, D) or each of its frames (B, T, N, D). ``heads`` need not be the
    encoder's (PE pools in 8 heads), nor ``hidden`` its MLP width.
    """

    def __init__(self, dim: int, heads: int, hidden: int, act: str = "gelu", norm_eps: float = 1e-6) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}; pick heads that divide it")
        self.heads = heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden, act)

    def forward(self, x: Tensor) -> Tensor:
        lead, (length, dim) = x.shape[:-2], x.shape[-2:]
        x = x.reshape(-1, length, dim)
        q = rearrange(self.q(self.latent), "1 1 (h e) -> 1 h 1 e", h=self.heads)
        q = q.expand(x.shape[0], -1, -1, -1)
        k, v = rearrange(self.kv(x), "b l (two h e) -> two b h l e", two=2, h=self.heads).unbind(0)
        pooled = self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h 1 e -> b (h e)"))  # (B, D)
        pooled = pooled + self.mlp(self.norm(pooled))
        return pooled.reshape(*lead, dim)
