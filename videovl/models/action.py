"""Action recognition: a linear head on the pooled clip embedding, and zero-shot classification.

Zero-shot class embeddings come from class-name prompts ("a video of a person {label}.") passed through
the text tower by the caller; this module only combines and compares embeddings.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ActionHead", "class_embeddings_from_prompts", "zero_shot_logits"]


class ActionHead(nn.Module):
    """Dropout then a linear layer: (B, D) -> (B, num_classes). Fine-tuning and linear probing."""

    def __init__(self, embed_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ActionHead needs num_classes >= 1, got {num_classes}; set model.num_classes")
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x))


def class_embeddings_from_prompts(prompt_emb: Tensor) -> Tensor:
    """(K, P, D) embeddings of P prompts per class -> (K, D) unit class embeddings.

    Prompts are normalised before averaging so that no prompt dominates through its norm (CLIP's
    prompt ensembling); the mean is renormalised because averaging unit vectors shortens them.
    """
    if prompt_emb.ndim != 3:
        raise ValueError(
            f"prompt embeddings must be (classes, prompts, dim), got shape {tuple(prompt_emb.shape)}"
        )
    return F.normalize(F.normalize(prompt_emb, dim=-1).mean(1), dim=-1)


def zero_shot_logits(video_emb: Tensor, class_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Scaled cosine similarity of clips (B, D) with classes (K, D) -> (B, K).

    ``logit_scale`` is the multiplier itself (the exponentiated learnt temperature, e.g. 100), not its log.
    """
    return logit_scale * F.normalize(video_emb, dim=-1) @ F.normalize(class_emb, dim=-1).t()
