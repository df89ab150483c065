"""Cross-modal alignment decoder: the image-text matching (ITM) head of ALBEF / BLIP.

The text's token states attend to each other and, through cross-attention, to the clip's visual tokens;
the first token's ([CLS]) output is classified as no-match / match. It is trained on hard negatives during
pretraining and re-ranks the top-k candidates of the dual encoder at evaluation.

The decoder takes any two token sequences; :meth:`VideoLanguageModel.match_logits` feeds it both towers'
tokens after the joint-space projections (align before fuse), so call the model's method, not the
decoder, to score pairs of a model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from videovl.config import AlignmentConfig
from videovl.models.layers.decoder import DecoderBlock, init_weights

__all__ = ["AlignmentDecoder"]


class AlignmentDecoder(nn.Module):
    def __init__(self, cfg: AlignmentConfig, text_width: int, visual_width: int) -> None:
        super().__init__()
        self.text_proj = nn.Linear(text_width, cfg.width)
        self.visual_proj = nn.Linear(visual_width, cfg.width)
        blocks = (DecoderBlock(cfg.width, cfg.heads, causal=False) for _ in range(cfg.depth))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, 2)
        self.apply(init_weights)

    def forward(self, text_hidden: Tensor, text_mask: Tensor | None, visual_tokens: Tensor) -> Tensor:
        """``text_hidden`` (B, L, Wt), ``text_mask`` (B, L), ``visual_tokens`` (B, N, Wv) -> logits
        (B, 2) for [no-match, match]."""
        return self.head(self.fuse(text_hidden, text_mask, visual_tokens)[:, 0])

    def fuse(self, text_hidden: Tensor, text_mask: Tensor | None, visual_tokens: Tensor) -> Tensor:
        """The text's fused token states (B, L, W), normed: each token has read the clip. The match head
        reads the first; question answering reads them all."""
        if text_hidden.shape[0] != visual_tokens.shape[0]:
            raise ValueError(
                f"alignment decoder got {text_hidden.shape[0]} texts but {visual_tokens.shape[0]} clips; "
                "pass one clip per text (repeat or index the visual tokens to form the pairs)"
            )
        x = self.text_proj(text_hidden)  # (B, L, W)
        memory = self.visual_proj(visual_tokens)  # (B, N, W)
        for block in self.blocks:
            x = block(x, memory, text_mask)
        return self.norm(x)

    def score(self, text_hidden: Tensor, text_mask: Tensor | None, visual_tokens: Tensor) -> Tensor:
        """Match log-odds ``log p(match) - log p(no-match)``, (B,): monotone in p(match), so it ranks."""
        logits = self(text_hidden, text_mask, visual_tokens)
        return logits[:, 1] - logits[:, 0]

    def score_pairs(
        self,
        text_hidden: Tensor,
        text_mask: Tensor | None,
        visual_tokens: Tensor,
        text_index: Tensor,
        clip_index: Tensor,
        chunk_size: int = 256,
    ) -> Tensor:
        """Scores of the pairs ``(text_index[p], clip_index[p])``, (P,), computed ``chunk_size`` pairs at a
        time, so the top-k candidates of every query can be re-ranked without forming all pairs at once.

        ``text_hidden`` (Nt, L, Wt), ``visual_tokens`` (Nv, N, Wv). Text-to-video re-ranking of a top-k
        ``topk`` (Nt, K) of clip indices is ``score_pairs(..., arange(Nt).repeat_interleave(K),
        topk.flatten()).view(Nt, K)``; video-to-text swaps the roles of the two index tensors.
        """
        if text_index.shape != clip_index.shape:
            raise ValueError(
                f"text_index {tuple(text_index.shape)} and clip_index {tuple(clip_index.shape)} must have "
                "the same shape: one entry per pair"
            )
        scores = []
        for t, c in zip(text_index.split(chunk_size), clip_index.split(chunk_size), strict=True):
            mask = None if text_mask is None else text_mask[t]
            scores.append(self.score(text_hidden[t], mask, visual_tokens[c]))
        return torch.cat(scores) if scores else text_hidden.new_zeros(0)
