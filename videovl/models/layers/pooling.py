"""Multi-head attention pooling (MAP): a learnt probe query attends over a token sequence (SigLIP's head).

Parameter names follow timm's ``AttentionPoolLatent``: latent, q, kv, proj, norm, mlp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from videovl.models.layers.attention import attend
from videovl.models.layers.mlp import Mlp

__all__ = ["AttentionPool"]


class AttentionPool(nn.Module):
    """A learnt probe, ``latent``, attends over the tokens (``q`` from it, ``kv`` from the tokens, ``proj``
    after), then a residual MLP on the pooled token: ``y = a + mlp(norm(a))``, ``a`` the attention output.

    ``x`` is (..., L, D) and the result (..., D): every leading axis is a batch axis, so the same head
    pools a whole clip (B, T*N, D) or each of its frames (B, T, N, D). ``heads`` need not be the
    encoder's (PE pools in 8 heads), nor ``hidden`` its MLP width.

    Three switches give VideoPrism's head: ``width``, the attention's own width (queries, keys and values
    in ``width`` channels, ``proj`` back to ``dim``; None: ``dim``); ``mlp=False``, no residual MLP, the
    norm on the attention output instead: ``y = norm(a)``; ``query_scale``, a learnt per-channel scale of
    each head's query, ``softplus(s) / ln 2`` (1 at the start, s = 0).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        hidden: int,
        act: str = "gelu",
        norm_eps: float = 1e-6,
        width: int | None = None,
        mlp: bool = True,
        query_scale: bool = False,
    ) -> None:
        super().__init__()
        width = width or dim
        if width % heads:
            raise ValueError(
                f"attention width {width} is not divisible by heads {heads}; pick heads that divide it"
            )
        self.heads = heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, width)
        self.kv = nn.Linear(dim, 2 * width)
        self.proj = nn.Linear(width, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden, act) if mlp else None
        self.query_scale = nn.Parameter(torch.zeros(width // heads)) if query_scale else None

    def forward(self, x: Tensor) -> Tensor:
        lead, (length, dim) = x.shape[:-2], x.shape[-2:]
        x = x.reshape(-1, length, dim)
        q = rearrange(self.q(self.latent), "1 1 (h e) -> 1 h 1 e", h=self.heads)
        if self.query_scale is not None:  # softplus(0) = ln 2: the scale starts at 1
            q = q * (F.softplus(self.query_scale) / math.log(2.0))
        q = q.expand(x.shape[0], -1, -1, -1)
        k, v = rearrange(self.kv(x), "b l (two h e) -> two b h l e", two=2, h=self.heads).unbind(0)
        pooled = self.proj(rearrange(attend(q, k, v), "b h 1 e -> b (h e)"))  # (B, D)
        if self.mlp is None:
            pooled = self.norm(pooled)
        else:
            pooled = pooled + self.mlp(self.norm(pooled))
        return pooled.reshape(*lead, dim)
