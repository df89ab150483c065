"""videovl: video-language pretraining with one visual encoder for images and videos.

The public names are imported on first use, so ``import videovl.data`` stays light in data-loader
workers and never pulls in transformers or timm.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "videovl.config",
    "ModelConfig": "videovl.config",
    "load_config": "videovl.config",
    "VideoLanguageModel": "videovl.models.model",
    "VideoTextOutput": "videovl.models.model",
    "create_model": "videovl.models.factory",
    "model_config": "videovl.models.factory",
    "load_checkpoint": "videovl.models.checkpoint",
    "save_checkpoint": "videovl.models.checkpoint",
    "list_models": "videovl.api",
    "create_model_and_transforms": "videovl.api",
    "get_tokenizer": "videovl.api",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'videovl' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
