"""Checkpoints: ``model.safetensors`` plus the resolved ``config.yaml``; loading runs no pickle code.

A checkpoint folder is written under a temporary name and renamed into place, so a crash while
saving never leaves a folder that looks complete.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_model
from torch import Tensor

from videovl.config import (
    Config,
    ConfigError,
    ModelConfig,
    deep_merge,
    from_dict,
    model_config_dict,
    not_loaded_error,
    read_yaml,
    save_config,
)
from videovl.models.factory import create_model, model_config
from videovl.models.model import VideoLanguageModel
from videovl.models.pretrained import foreign_model_config, foreign_normalisation, state_mismatch

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_config",
    "require_checkpoint",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

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
        # What the model was built with (token ids, a pretrained checkpoint's resolved fields), less the
        # sources of its initial weights: the checkpoint rebuilds without them.
        cfg.model = dataclasses.replace(copy.deepcopy(model.cfg), pretrained=None, pretrained_config=None)
        cfg.model.text.config = model.text.hf_config()
        # An encoder inflated from timm knows its full architecture; storing it (without the timm
        # source) lets the checkpoint rebuild without the original weights file.
        cfg.model.vision = dataclasses.replace(
            model.visual.cfg, timm_model=None, timm_checkpoint=None, pretrained=None
        )
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
    """Rebuild the model from ``path/config.yaml`` and load ``path/model.safetensors``; or build it from
    a CLIP (folder or state-dict file), TimeSformer or VideoMAE folder, with the default settings.

    ``model_overrides`` are nested like :func:`~videovl.models.factory.create_model`'s
    (``vision={"drop_path": 0.1}`` changes that one field). Loading is strict, except for heads the
    overrides add, drop or resize (``num_classes=5``, ``caption={"enabled": False}``): a new head keeps
    its fresh initialisation and a dropped one's weights are ignored. Any other difference between the
    file and the config (overriding the towers' sizes, say) is an error.
    """
    cfg, saved = _read_config(path, model_overrides)
    if saved is None:  # a CLIP, TimeSformer or VideoMAE checkpoint: its model, default settings
        return create_model(cfg.model), cfg
    path = Path(path)
    model = VideoLanguageModel(cfg.model)
    # Heads the overrides add, drop or resize: the file's weights for them (if any) are left out.
    before = _heads(from_dict(ModelConfig, model_config_dict(saved), f"{path}/{CONFIG_NAME}: model"))
    after = _heads(cfg.model)
    replaced = tuple(k for k in before if before[k] != after[k])
    state = {k: v for k, v in load_file(path / WEIGHTS_NAME).items() if not k.startswith(replaced)}
    _check_state(model, state, replaced, path / WEIGHTS_NAME)
    model.load_state_dict(state, strict=False)
    model.pretrained_params = frozenset(n for n, _ in model.named_parameters() if n in _stored(model, state))
    return model, cfg


def checkpoint_config(path: str | Path, **model_overrides: Any) -> Config:
    """The config :func:`load_checkpoint` builds its model from, without reading the weights (a CLIP's
    config is read, its weights are not): what a tokenizer or a transform of the checkpoint needs."""
    return _read_config(path, model_overrides)[0]


def _read_config(path: str | Path, model_overrides: dict[str, Any]) -> tuple[Config, dict[str, Any] | None]:
    """The checkpoint's config with the overrides, and its model section as saved (None for a checkpoint
    of another library, whose config is videovl's defaults around the model it holds)."""
    path = require_checkpoint(path)
    if not (path / CONFIG_NAME).is_file():
        foreign = foreign_model_config(path)
        if foreign is not None:
            cfg = Config(model=model_config(deep_merge(foreign, model_overrides)))
            vision = cfg.model.vision
            cfg.data.image_size, cfg.data.num_frames = vision.image_size, vision.num_frames
            norm = foreign_normalisation(path)
            if norm is not None:  # the pixels the checkpoint was trained on
                cfg.data.mean, cfg.data.std = (tuple(v) for v in norm)
            return cfg, None
        if path.is_file():
            raise ConfigError(
                f"{path} is a file, not a checkpoint: expected a videovl checkpoint folder "
                f"({CONFIG_NAME} and {WEIGHTS_NAME}), a CLIP, TimeSformer or VideoMAE folder, or an "
                "open_clip / OpenAI CLIP state dict (.pt, .pth, .bin, .safetensors)"
            )
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise ConfigError(
                f"{path} is not a videovl checkpoint: {name} is missing (nor is it a CLIP, TimeSformer or "
                "VideoMAE checkpoint)"
            )
    where = f"{path}/{CONFIG_NAME}"
    raw = read_yaml(path / CONFIG_NAME, what="checkpoint config")
    saved = raw.get("model", {})
    raw["model"] = model_config_dict(deep_merge(saved, model_overrides), f"{where}: model")
    cfg = from_dict(Config, raw, where)
    if (path / "tokenizer_config.json").is_file():
        cfg.model.text.tokenizer = str(path)
    return cfg, saved


def require_checkpoint(path: str | Path, field: str = "checkpoint") -> Path:
    """``path`` as a Path, or a ConfigError when nothing is there: a mistyped path should read as one,
    not as a folder that lacks config.yaml."""
    if not Path(path).exists():
        raise not_loaded_error(field, str(path), what="checkpoint")
    return Path(path)


def _heads(cfg: ModelConfig) -> dict[str, Any]:
    """By parameter-name prefix, what decides whether each optional head exists and what it means."""
    # Another class count is another classifier: its old weights mean nothing for the new classes.
    return {
        "alignment.": cfg.alignment.enabled,
        "caption.": cfg.caption.enabled,
        "qa.question_proj.": cfg.qa.enabled,
        "qa.clip_proj.": cfg.qa.enabled,
        "qa.clip_norm.": cfg.qa.enabled,
        "qa.joint_q.": cfg.qa.enabled,
        "qa.joint_v.": cfg.qa.enabled,
        # a classifier over other answers (another count, or another run's list) is another classifier
        "qa.classifier.": (cfg.qa.enabled, cfg.qa.num_answers),
        "qa.classifier_q.": (cfg.qa.enabled, cfg.qa.num_answers),
        "qa.classifier_v.": (cfg.qa.enabled, cfg.qa.num_answers),
        "action_head.": cfg.num_classes,
        "ordered_proj": cfg.clip_pool,
        "text_adapter.": cfg.text_adapter_layers,
    }


def _stored(model: VideoLanguageModel, state: dict[str, Tensor]) -> set[str]:
    """The parameter names ``state`` holds, each tied tensor (the caption decoder's embedding and output
    layer) under every one of its names: a file keeps it once, under the embedding's name (older files:
    under the head's)."""
    names: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), set()).add(name)
    return {n for group in names.values() if group & state.keys() for n in group}


def _check_state(model: VideoLanguageModel, state: dict[str, Tensor], skip: tuple[str, ...], file: Path):
    # every name of a tied tensor is a name the file may use
    expected = model.state_dict() | dict(model.named_parameters(remove_duplicate=False))
    problems = state_mismatch(expected, state, skip, _stored(model, state))
    if problems:
        raise ConfigError(
            f"{file} does not match the model its config builds: {'; '.join(problems)}. Overrides may "
            "add, drop or resize heads (num_classes, alignment, caption, qa) but not change the towers"
        )
