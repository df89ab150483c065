"""Typed configuration: one dataclass per component, loaded from YAML, strict on unknown keys.

A config file mirrors :class:`Config`. Any key can be overridden from the command line as
``section.key=value`` (``model.vision.depth=2``, ``stages.0.steps=10``); values are parsed as YAML, so
``train.mixed_precision=bf16`` and ``eval.batch_size=64`` get the right types.

``schema`` holds the dataclasses, ``choices`` the allowed words of their fields (a typo is an error at
load time), ``sizes`` the named model sizes, ``loading`` the reading and writing. This package is a leaf:
it imports nothing from the rest of videovl but the other leaf ``extras`` (which package an extra brings).
"""

from videovl.config.choices import (
    ACTIVATIONS,
    AGGREGATIONS,
    ATTENTION_MODES,
    BACKENDS,
    CLIP_POOLS,
    CONTRASTIVE_KINDS,
    FINAL_NORMS,
    FREEZABLE,
    INFLATIONS,
    KINDS,
    POS_EMBEDS,
    PRECISIONS,
    RESIDUAL_FRAMES,
    ROPE_AXES,
    ROPES,
    TEXT_POOLS,
    VISION_INITS,
    VISION_POOLS,
)
from videovl.config.errors import ConfigError, not_one_of
from videovl.config.loading import (
    apply_overrides,
    from_dict,
    load_config,
    read_yaml,
    resolve_path,
    save_config,
    to_dict,
)
from videovl.config.paths import looks_like_path, not_loaded_error
from videovl.config.schema import (
    AlignmentConfig,
    CaptionConfig,
    Config,
    DataConfig,
    DataSource,
    EvalConfig,
    LossWeights,
    MaskRatio,
    MiningConfig,
    ModelConfig,
    QAConfig,
    StageConfig,
    TextConfig,
    TrainConfig,
    VisionConfig,
)
from videovl.config.sizes import MODEL_SIZES, deep_merge, model_config_dict

__all__ = [
    "ConfigError",
    "not_one_of",
    "VisionConfig",
    "TextConfig",
    "AlignmentConfig",
    "CaptionConfig",
    "ModelConfig",
    "QAConfig",
    "DataSource",
    "DataConfig",
    "LossWeights",
    "MiningConfig",
    "MaskRatio",
    "StageConfig",
    "TrainConfig",
    "EvalConfig",
    "Config",
    "load_config",
    "read_yaml",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "save_config",
    "resolve_path",
    "looks_like_path",
    "not_loaded_error",
    "MODEL_SIZES",
    "deep_merge",
    "model_config_dict",
    # the allowed words of the fields that take one (videovl.config.choices)
    "ACTIVATIONS",
    "AGGREGATIONS",
    "ATTENTION_MODES",
    "BACKENDS",
    "CLIP_POOLS",
    "CONTRASTIVE_KINDS",
    "FINAL_NORMS",
    "FREEZABLE",
    "INFLATIONS",
    "KINDS",
    "POS_EMBEDS",
    "PRECISIONS",
    "RESIDUAL_FRAMES",
    "ROPE_AXES",
    "ROPES",
    "TEXT_POOLS",
    "VISION_INITS",
    "VISION_POOLS",
]
