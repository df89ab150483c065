"""Checkpoints: ``model.safetensors`` plus the resolved ``config.yaml``; loading runs no pickle code.

A checkpoint folder is written under a temporary name and renamed into place, so a crash while
saving never leaves a folder that looks complete.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_model, save_model

from videovl.config import Config, ConfigError, from_dict, model_config_dict, save_config
from videovl.models.model import VideoLanguageModel

__all__ = ["save_checkpoint", "load_checkpoint", "WEIGHTS_NAME", "CONFIG_NAME"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


def save_checkpoint(
    model: VideoLanguageModel, cfg: Config, path: str | Path, extra_files: Any = None
) -> Path:
    """Write ``model`` and ``cfg`` to folder ``path`` atomically.

    The text tower's own config is stored, so the checkpoint rebuilds without the original text
    model's files. ``extra_files`` is a callable given the temporary folder (e.g. to save a tokenizer).
    """
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    # Leftovers of a save that was killed: a crash between the two renames below leaves the previous
    # checkpoint only under ``.old``, so put it back rather than delete it.
    if old.exists() and not path.exists():
        old.rename(path)
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    try:
        cfg = copy.deepcopy(cfg)
        cfg.model.text.config = model.text.hf_config()
        save_model(model, str(tmp / WEIGHTS_NAME))
        if extra_files is not None:
            extra_files(tmp)
        save_config(cfg, tmp / CONFIG_NAME)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)
    return path


def load_checkpoint(path: str | Path, **model_overrides: Any) -> tuple[VideoLanguageModel, Config]:
    """Rebuild the model from ``path/config.yaml`` and load ``path/model.safetensors`` (strict)."""
    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise ConfigError(f"{path} is not a videovl checkpoint: {name} is missing")
    raw = yaml.safe_load((path / CONFIG_NAME).read_text())
    raw["model"] = model_config_dict(
        {**raw.get("model", {}), **model_overrides}, f"{path}/{CONFIG_NAME}: model"
    )
    cfg = from_dict(Config, raw, str(path / CONFIG_NAME))
    if (path / "tokenizer_config.json").is_file():
        cfg.model.text.tokenizer = str(path)
    model = VideoLanguageModel(cfg.model)
    missing, unexpected = load_model(model, str(path / WEIGHTS_NAME), strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{path}/{WEIGHTS_NAME} does not match its config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model, cfg
