"""The whole run checked before step one.

Each stage's settings used to be checked when the stage started, so a typo or a missing manifest in the
last stage failed after the earlier stages had trained. :func:`check_run` asks the same functions the
stages use (``check_freeze``, ``check_masking``, ``load_stage_sources``, ``check_loss_heads``) about every
stage up front, and hands the loaded sources on so the loop reads each manifest once. A run whose task
does not answer questions (pretraining, and fine-tuning for any other task) is also checked for question
files and QA losses (``check_no_questions``), which its task would only refuse at its first batch.
"""

from __future__ import annotations

import torch
from torch import nn

from videovl.config import Config, ConfigError
from videovl.data.sources import ManifestError, read_manifest
from videovl.extras import require
from videovl.tasks.pretrain import check_loss_heads, check_no_questions
from videovl.train.data import (
    LoadedSources,
    check_caption_vocabulary,
    load_stage_sources,
    resolve_manifest,
)
from videovl.train.stages import check_freeze, check_masking

__all__ = ["check_run"]


def check_run(
    cfg: Config, model: nn.Module, *, answers_questions: bool = False
) -> list[LoadedSources | None]:
    """Raise a ConfigError naming the key (``stages.2.sources.0.manifest: ...``) for the first setting of
    any stage that cannot run on ``model``: steps, freeze, masking, losses against the model's heads, and
    sources (kind, manifest or shards, files present and parseable, labels, shard patterns). Returns each
    stage's loaded sources for ``build_stage_data``. A stage of 0 steps is left out of the run (often
    because it does not fit: a CLIP without the alignment head skips the ITM stage), so only its own
    settings are checked, not what it would need of the model and the data; its entry is None.
    ``answers_questions``: the run's task trains question answering (``tools/finetune.py --task qa``,
    which checks its own stages), so question files and QA losses are allowed."""
    if cfg.train.compile is not None:
        backends = torch.compiler.list_backends(exclude_tags=())
        if cfg.train.compile not in backends:
            raise ConfigError(
                f"train.compile is '{cfg.train.compile}', not a torch.compile backend; expected one of "
                f"{torch.compiler.list_backends()} (inductor compiles for GPUs and CPUs), or null for eager"
            )
    loaded: list[LoadedSources | None] = []
    for i, stage in enumerate(cfg.stages):
        where = f"stages.{i}"
        if stage.steps < 0:
            raise ConfigError(f"{where}.steps is {stage.steps}; expected >= 0 (0 skips the stage)")
        check_freeze(stage.freeze, stage.text_unlocked_layers, where)
        if stage.steps == 0:
            loaded.append(None)
            continue
        if stage.mining.enabled:  # here, not at the first mining pass hundreds of steps in
            require("faiss", f"{where}.mining (hard-negative mining)")
        if not answers_questions:  # before the heads and sources, whose errors would not say why
            check_no_questions(stage, where)
        check_masking(model.visual, stage, i, cfg.data.image_size)
        check_loss_heads(model, stage.losses, f"{where}.losses")
        loaded.append(load_stage_sources(cfg, i))
        check_caption_vocabulary(cfg, i, loaded[-1])
    # Validation manifests are read before step one anyway; the test manifest only after the last stage.
    if cfg.data.test_manifest:
        try:
            read_manifest(resolve_manifest(cfg.data.test_manifest, cfg))
        except ManifestError as e:
            raise ConfigError(f"data.test_manifest: {e}") from None
    if cfg.eval.action_classes and cfg.data.test_manifest:  # it scores the test split, if there is one
        classes = resolve_manifest(cfg.eval.action_classes, cfg)
        if not classes.is_file():
            raise ConfigError(
                f"eval.action_classes: {classes} does not exist (a file, one class name a line)"
            )
    for i, prompt in enumerate(cfg.eval.action_prompts):
        if "{label}" not in prompt:
            raise ConfigError(f"eval.action_prompts[{i}] is {prompt!r}; it needs a {{label}} placeholder")
    return loaded
