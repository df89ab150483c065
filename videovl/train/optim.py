"""AdamW with parameter groups: no weight decay on norms, biases, embeddings and the temperature; the text
tower and the parameters loaded from a checkpoint at their own learning-rate scales."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer", "describe_groups"]


def param_groups(
    model: nn.Module, weight_decay: float, text_lr_scale: float = 1.0, pretrained_lr_scale: float = 1.0
) -> list[dict]:
    """Decay / no-decay groups, each split again for the text tower when it learns at its own rate (a
    pretrained text encoder wants a smaller lr than a visual encoder trained from scratch) and for the
    parameters ``model.pretrained_params`` names (loaded from a checkpoint: CLIP4Clip fine-tunes CLIP a
    thousand times slower than its new layers). Each group lists its parameters' names under ``names``."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    pretrained = getattr(model, "pretrained_params", frozenset())
    groups: dict[tuple[bool, bool, bool], dict] = {}
    # Frozen parameters are kept: a later stage may unfreeze them, and AdamW skips a parameter
    # that has no gradient.
    for name, p in model.named_parameters():
        decays = not (p.ndim < 2 or name in skip or "pos_embed" in name or name.endswith("token"))
        key = (decays, name.startswith("text."), name in pretrained)
        group = groups.setdefault(key, {"params": [], "names": []})
        group["params"].append(p)
        group["names"].append(name)
    return [
        {
            **group,
            "weight_decay": weight_decay if decays else 0.0,
            "lr_scale": (text_lr_scale if is_text else 1.0) * (pretrained_lr_scale if loaded else 1.0),
            "pretrained": loaded,
        }
        for (decays, is_text, loaded), group in groups.items()
    ]


def describe_groups(groups: list[dict], full: bool = False) -> str:
    """One line per group: its lr scale, weight decay, origin and parameters (the first few, or all)."""
    lines = []
    for i, g in enumerate(groups):
        names = g["names"] if full else g["names"][:4] + (["..."] if len(g["names"]) > 4 else [])
        origin = "pretrained" if g.get("pretrained") else "new"
        lines.append(
            f"group {i}: lr x{g['lr_scale']:g}, weight decay {g['weight_decay']:g}, {origin}, "
            f"{len(g['names'])} tensors: {', '.join(names)}"
        )
    return "\n".join(lines)


def build_optimizer(
    model: nn.Module,
    weight_decay: float,
    betas: tuple[float, float],
    text_lr_scale: float = 1.0,
    pretrained_lr_scale: float = 1.0,
) -> torch.optim.AdamW:
    # The loop sets each group's lr every step: schedule(step) * group["lr_scale"].
    groups = param_groups(model, weight_decay, text_lr_scale, pretrained_lr_scale)
    # The fused kernel (CPUs and GPUs) updates every tensor in one pass: on a 2-core CPU the demo's step
    # took 2.8x less than the foreach one (a MiniLM-sized 30,522 x 192 table and 150 small tensors).
    return torch.optim.AdamW(groups, lr=1.0, betas=betas, fused=True)
