"""AdamW with parameter groups: no weight decay on norms, biases, embeddings and the temperature."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    # Frozen parameters are kept: a later stage may unfreeze them, and AdamW skips a parameter
    # that has no gradient.
    for name, p in model.named_parameters():
        if p.ndim < 2 or name in skip or "pos_embed" in name or name.endswith("token"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    # Base lr 1.0: the LambdaLR schedule returns the absolute lr of each step.
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=1.0, betas=betas)
