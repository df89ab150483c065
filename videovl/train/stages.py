"""Per-stage freezing (OmniVL's decoupled image-then-joint schedule freezes or trains parts by stage)."""

from __future__ import annotations

from torch import nn

from videovl.config import ConfigError

__all__ = ["FREEZABLE", "apply_freeze"]

FREEZABLE = ("visual", "text", "temporal", "projections")


def apply_freeze(model: nn.Module, freeze: list[str], text_unlocked_layers: int = 0) -> dict[str, int]:
    """Make exactly the parts in ``freeze`` untrainable (everything else trainable); returns counts.

    With "text" in ``freeze``, ``text_unlocked_layers`` > 0 keeps the text tower's last that many layers
    trainable (``TextEncoder.lock``). A fully frozen tower of a :class:`VideoLanguageModel` then runs in
    eval mode while the model trains."""
    unknown = [f for f in freeze if f not in FREEZABLE]
    if unknown:
        raise ConfigError(f"stages[].freeze has {unknown}; each entry must be one of {FREEZABLE}")
    if text_unlocked_layers < 0 or text_unlocked_layers and "text" not in freeze:
        raise ConfigError(
            f"stages[].text_unlocked_layers is {text_unlocked_layers}; it must be >= 0 and needs 'text' in "
            "the stage's freeze (it unlocks the last layers of a locked text tower)"
        )
    for p in model.parameters():
        p.requires_grad_(True)
    if "visual" in freeze:
        model.visual.requires_grad_(False)
    if "text" in freeze:
        model.text.requires_grad_(False)
        if text_unlocked_layers:
            model.text.lock(text_unlocked_layers)
    if "projections" in freeze:  # the joint space: with visual and text frozen, a linear probe
        for p in (*model.visual_proj.parameters(), *model.text_proj.parameters(), model.logit_scale):
            p.requires_grad_(False)
    if "temporal" in freeze:
        for p in model.visual.temporal_parameters():
            p.requires_grad_(False)
    model.train(model.training)  # a model that keeps locked towers in eval mode re-reads what is locked
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "frozen": sum(p.numel() for p in model.parameters()) - trainable}
