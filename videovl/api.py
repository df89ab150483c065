"""The entry points a timm or open_clip user looks for: ``list_models``, ``create_model_and_transforms``,
``get_tokenizer``.

Each takes a model size name (``list_models()``), a checkpoint (a folder written by ``save_checkpoint`` or
a training run, or another library's checkpoint as ``load_checkpoint`` reads them: CLIP / open_clip,
SigLIP, MetaCLIP 2, VideoPrism video-text, TimeSformer, VideoMAE, V-JEPA 2, VideoPrism video), a
:class:`~videovl.config.ModelConfig` or a mapping. The model and its preprocessing stay apart, as
everywhere in videovl: the model takes tensors, and this module hands out the data layer's preprocessing
(decoding, frame sampling, transforms, tokenizer) configured for that model.

    model, preprocess_train, preprocess_eval = videovl.create_model_and_transforms("runs/demo/model")
    tokenizer = videovl.get_tokenizer("runs/demo/model")
    out = model(preprocess_eval("clip.mp4").unsqueeze(0), **tokenizer("a dog runs"))
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path
from typing import Any

from videovl.config import MODEL_SIZES, Config, ConfigError, ModelConfig, looks_like_path
from videovl.data.media.inputs import ClipPreprocessor
from videovl.data.media.transforms import build_transform
from videovl.data.tokenizer import TextTokenizer, load_tokenizer
from videovl.models.checkpoint import checkpoint_config, load_checkpoint
from videovl.models.factory import create_model, model_config
from videovl.models.model import VideoLanguageModel

__all__ = ["list_models", "create_model_and_transforms", "get_tokenizer", "get_config"]

ModelSpec = str | os.PathLike | ModelConfig | dict[str, Any]


def list_models(pattern: str | None = None) -> list[str]:
    """The model size names, sorted; ``pattern`` filters them shell-style (``"vit*"``). A checkpoint is
    not a name: pass its folder to :func:`create_model_and_transforms` directly."""
    names = sorted(MODEL_SIZES)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]


def _unknown(spec: str) -> ConfigError:
    sizes = ", ".join(repr(n) for n in list_models())
    close = difflib.get_close_matches(spec, list_models(), n=1, cutoff=0.5)
    if close:
        hint = f" Did you mean the size '{close[0]}'?"
    elif looks_like_path(spec):
        path = Path(spec).expanduser().absolute()
        parent = next((p for p in path.parents if p.exists()), None)
        hint = f" No such file or folder (the nearest folder that exists is {parent})."
    elif "/" in spec:  # owner/name: a hub repository, or a relative path that is not there
        hint = (
            f" No such file or folder here; if it is a hub name, videovl never downloads: fetch it once "
            f"(`hf download {spec} --local-dir DIR`) and pass DIR."
        )
    else:
        hint = ""
    return ConfigError(
        f"name_or_checkpoint is '{spec}', which is neither a model size ({sizes}) nor an existing checkpoint "
        f"folder or file.{hint}"
    )


def _resolve(name_or_checkpoint: ModelSpec) -> tuple[str, Any]:
    """("size", name), ("checkpoint", path) or ("config", a ModelConfig or mapping). A size name wins over
    a folder of the same name in the working directory: write ``./demo`` for the folder."""
    if isinstance(name_or_checkpoint, (ModelConfig, dict)):
        return "config", name_or_checkpoint
    if not isinstance(name_or_checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"name_or_checkpoint is a {type(name_or_checkpoint).__name__}; expected a size name "
            f"({', '.join(list_models())}), a checkpoint path, a ModelConfig or a mapping"
        )
    spec = os.fspath(name_or_checkpoint)
    if isinstance(name_or_checkpoint, str) and spec in MODEL_SIZES:
        return "size", spec
    path = Path(spec).expanduser()
    if path.exists():
        return "checkpoint", path
    raise _unknown(spec)


def get_config(name_or_checkpoint: ModelSpec, **model_overrides: Any) -> Config:
    """The config a model of ``name_or_checkpoint`` is built from, without building it or reading any
    weights. A checkpoint brings its own (data settings included); a size or a model config gets the
    default data settings around it, at the visual tower's image size and frame count."""
    kind, spec = _resolve(name_or_checkpoint)
    if kind == "checkpoint":
        return checkpoint_config(spec, **model_overrides)
    cfg = Config(model=model_config(spec, **model_overrides))
    cfg.data.image_size, cfg.data.num_frames = cfg.model.vision.image_size, cfg.model.vision.num_frames
    return cfg


def _transforms(cfg: Config) -> tuple[ClipPreprocessor, ClipPreprocessor]:
    data = cfg.data
    return tuple(
        ClipPreprocessor(build_transform(data, train=train), data.num_frames, backend=data.backend)
        for train in (True, False)
    )


def create_model_and_transforms(
    name_or_checkpoint: ModelSpec, **model_overrides: Any
) -> tuple[VideoLanguageModel, ClipPreprocessor, ClipPreprocessor]:
    """``(model, preprocess_train, preprocess_eval)`` for a size name, a checkpoint, a ModelConfig or a
    mapping; ``model_overrides`` are nested as :func:`~videovl.models.factory.create_model`'s
    (``num_classes=5``, ``vision={"drop_path": 0.1}``).

    The model is in eval mode (call ``.train()`` to fine-tune). Each preprocess turns a video or image path,
    a video's bytes, uint8 frames (T, H, W, 3) or a PIL image into one clip (C, T, H, W), at the frame count,
    image size and normalisation the checkpoint was trained with (a size: its visual tower's):
    ``preprocess_eval`` takes the centre frame of each segment and the centre crop, ``preprocess_train``
    random ones (``preprocess_train(media, rng)`` with a seeded numpy Generator repeats a view).
    """
    kind, spec = _resolve(name_or_checkpoint)
    if kind == "checkpoint":
        model, cfg = load_checkpoint(spec, **model_overrides)
    else:
        cfg = get_config(spec, **model_overrides)
        model = create_model(cfg.model)
    return (model.eval(), *_transforms(cfg))


def get_tokenizer(name_or_checkpoint: ModelSpec, **model_overrides: Any) -> TextTokenizer:
    """The tokenizer of the model's text tower, at its ``max_length``: call it on a string or a list of
    strings for ``{"input_ids", "attention_mask"}``, which ``model(pixels, **tokens)`` and
    ``model.encode_text(**tokens)`` take. Local files only, as everywhere in videovl."""
    text = get_config(name_or_checkpoint, **model_overrides).model.text
    return TextTokenizer(load_tokenizer(text), text.max_length)
