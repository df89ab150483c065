"""Transformer MLP and the activations ViTs use, chosen by name from the config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from videovl.config import ACTIVATIONS

__all__ = ["Mlp", "QuickGELU", "make_act"]


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


# One maker for each of the config's ACTIVATIONS.
_MAKERS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": QuickGELU,
}


def make_act(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation '{name}' is not one of {sorted(ACTIVATIONS)}")
    return _MAKERS[name]()


class Mlp(nn.Module):
    """fc1 -> act -> fc2 (parameter names as in timm, so ViT weights load by name)."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))
