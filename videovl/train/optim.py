"""AdamW with parameter groups: no weight decay on norms, biases, embeddings and the temperature."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer"]


def param_groups(model: nn.Module, weight_decay: float, text_lr_scale: float = 1.0) -> list[dict]:
    """Decay / no-decay groups, each split again for the text tower when it learns at its own rate
    (a pretrained text encoder wants a smaller lr than a visual encoder trained from scratch)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[bool, bool], list] = {}
    # Frozen parameters are kept: a later stage may unfreeze them, and AdamW skips a parameter
    # that has no gradient.
    for name, p in model.named_parameters():
        decays = not (p.ndim < 2 or name in skip or "pos_embed" in name or name.endswith("token"))
        groups.setdefault((decays, name.startswith("text.")), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decays else 0.0,
            "lr_scale": text_lr_scale if is_text else 1.0,
        }
        for (decays, is_text), params in groups.items()
    ]


def build_optimizer(
    model: nn.Module, weight_decay: float, betas: tuple[float, float], text_lr_scale: float = 1.0
) -> torch.optim.AdamW:
    # The loop sets each group's lr every step: schedule(step) * group["lr_scale"].
    return torch.optim.AdamW(param_groups(model, weight_decay, text_lr_scale), lr=1.0, betas=betas)
