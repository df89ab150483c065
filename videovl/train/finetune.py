"""Fine-tuning a pretraining checkpoint for retrieval, action recognition, captioning or question answering.

The pretraining loop runs unchanged (stages, save_state checkpoints, resume, logging, mixed precision,
gradient accumulation and clipping) on the checkpoint's model and a task:
  retrieval  contrastive (+ frame-level) losses of the config's stages; validation: text-video retrieval
  caption    the caption loss alone; validation: caption loss on data.val_manifest
  action     cross-entropy of a new linear head on the clip embedding; validation: top-1 / top-5. A stage
             that freezes [visual, text, projections] is a linear probe, one that freezes nothing a full
             fine-tune.
  qa         the answer's language-modelling loss (losses.qa) through the QA head (the question fused with
             the clip by the alignment decoder conditions the caption decoder), and optionally a classifier
             over the top-N training answers (losses.qa_classify); sources of kind video-qa; validation:
             qa/rank (and qa/classify) accuracy on data.val_manifest, a question file; the test split is
             scored with every protocol that applies. The answer vocabulary (top N of the training
             answers) is written beside the model as answers.json.
The config's model section holds overrides of the checkpoint's model (e.g. vision.drop_path); the rest of
the model comes from the checkpoint, as do data.image_size / num_frames / mean / std unless the config
sets them. The fine-tuned model lands in train.output_dir/model, for tools/evaluate.py (for actions with
--mode head: the head's class list is written beside it as classes.txt, line index = output index;
for qa: answers.json).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from videovl.config import Config, ConfigError, apply_overrides, deep_merge, from_dict, read_yaml
from videovl.data.answers import AnswerVocab
from videovl.data.corpora.demo import generate_demo
from videovl.data.datasets import build_label_map
from videovl.data.tokenizer import load_tokenizer
from videovl.eval.benchmarks import EvalSet
from videovl.eval.runner import format_metrics
from videovl.models.checkpoint import CONFIG_NAME, load_checkpoint, require_checkpoint
from videovl.models.factory import model_config
from videovl.models.pretrained import foreign_model_config
from videovl.tasks.pretrain import PretrainTask
from videovl.tasks.qa import QATask, check_qa_losses
from videovl.tasks.recognition import RecognitionTask
from videovl.train.accelerator import make_accelerator
from videovl.train.data import load_source
from videovl.train.evaluation import (
    evaluate_action,
    evaluate_qa,
    load_eval_set,
    load_qa_eval_set,
    make_evaluator,
    prefixed,
)
from videovl.train.loop import pretrain

__all__ = [
    "TASKS",
    "CLASSES_NAME",
    "ANSWERS_NAME",
    "DEFAULT_TOP_ANSWERS",
    "answer_vocab",
    "finetune_config",
    "finetune",
    "action_classes",
    "check_labels",
    "check_head_classes",
    "evaluate_caption_loss",
    "make_validator",
]

TASKS = ("retrieval", "action", "caption", "qa")
# What the checkpoint's encoder was trained to read; the fine-tuning config inherits them unless it sets them.
INHERITED_DATA = ("image_size", "num_frames", "mean", "std")
CLASSES_NAME = "classes.txt"
ANSWERS_NAME = "answers.json"
DEFAULT_TOP_ANSWERS = 1500


# -------------------------------------------------------------------------------------------- config


def finetune_config(config: str | Path, overrides: list[str], checkpoint: str | Path) -> tuple[Config, dict]:
    """The fine-tuning config (its model section still the pretraining default) and the model overrides
    (the config's ``model`` section with ``model.*`` command-line overrides applied)."""
    path = Path(config)
    raw = read_yaml(path)
    raw = apply_overrides(raw, overrides)
    model_overrides = raw.pop("model", None) or {}
    if "name" in model_overrides:
        raise ConfigError(
            f"model.name={model_overrides['name']!r}: the architecture comes from the checkpoint; the "
            "model section may only override fields of it (e.g. vision.drop_path, num_classes)"
        )
    saved = require_checkpoint(checkpoint, "--checkpoint") / CONFIG_NAME
    foreign = None if saved.is_file() else foreign_model_config(checkpoint)
    if foreign is not None:  # a CLIP, TimeSformer or VideoMAE checkpoint: frames and size are its own
        vision = model_config(deep_merge(foreign, model_overrides)).vision
        saved_data = {"image_size": vision.image_size, "num_frames": vision.num_frames}
    elif not saved.is_file():
        raise ConfigError(
            f"--checkpoint {checkpoint} is not a videovl checkpoint: {CONFIG_NAME} is missing (nor is it a "
            "CLIP, TimeSformer or VideoMAE checkpoint)"
        )
    else:
        saved_data = read_yaml(saved, what="checkpoint config").get("data") or {}
    data = raw.setdefault("data", {})
    for key in INHERITED_DATA:
        if key not in data and key in saved_data:
            data[key] = saved_data[key]
    return from_dict(Config, raw, f"{path}: config"), model_overrides


def action_classes(cfg: Config) -> list[str]:
    """The head's classes in output order: the sorted labels of each stage's sources, as the loop's
    ``build_stage_data`` numbers them; every stage must have the same ones."""
    per_stage = []
    for i, stage in enumerate(cfg.stages):
        unlabelled = [s.kind for s in stage.sources if not s.kind.endswith("-label")]
        if unlabelled or not stage.sources:
            raise ConfigError(
                f"--task action: stages.{i} ('{stage.name}') has source kinds {unlabelled or 'none'}; "
                "action fine-tuning trains on labelled sources only (kind video-label or image-label)"
            )
        if any(s.shards for s in stage.sources):
            raise ConfigError(
                f"--task action: stages.{i} ('{stage.name}') reads shards, whose labels are only known "
                "once read; the classifier head needs its class list up front: use manifests"
            )
        sets = [load_source(s, cfg, f"stages.{i}.sources.{j}") for j, s in enumerate(stage.sources)]
        per_stage.append(list(build_label_map(*sets)))
    if not per_stage:
        raise ConfigError("--task action: the config has no stages")
    for i, classes in enumerate(per_stage[1:], 1):
        if classes != per_stage[0]:
            diff = sorted(set(classes) ^ set(per_stage[0]))
            raise ConfigError(
                f"--task action: stages.{i} has {len(classes)} classes and stages.0 {len(per_stage[0])}, "
                f"differing in {diff[:5]}; every stage must train the same head on the same label set"
            )
    return per_stage[0]


def answer_vocab(cfg: Config, top_n: int = DEFAULT_TOP_ANSWERS) -> AnswerVocab:
    """The top ``top_n`` normalised answers of every stage's training questions; every stage must read
    question files only (kind video-qa) and train a QA loss alone."""
    answers = []
    for i, stage in enumerate(cfg.stages):
        other = [s.kind for s in stage.sources if s.kind != "video-qa"]
        if other or not stage.sources:
            raise ConfigError(
                f"--task qa: stages.{i} ('{stage.name}') has source kinds {other or 'none'}; question "
                "answering trains on question files (kind video-qa, the MSRVTT-QA layout)"
            )
        check_qa_losses(stage.losses, f"stages.{i}.losses")
        for j, source in enumerate(stage.sources):
            answers += [q.answer for q in load_source(source, cfg, f"stages.{i}.sources.{j}")]
    if not cfg.stages:
        raise ConfigError("--task qa: the config has no stages")
    return AnswerVocab.build(answers, top_n)


def check_labels(data: EvalSet, classes: list[str]) -> None:
    unknown = sorted({s.label for s in data.samples if s.label is not None} - set(classes))
    unlabelled = [s.path for s in data.samples if s.label is None]
    if unknown or unlabelled:
        raise ConfigError(
            f"{data.name}: {len(unknown)} labels are not among the {len(classes)} training classes "
            f"(e.g. {unknown[:3]}) and {len(unlabelled)} samples have no label; action validation and "
            "test manifests need labels from the training set's classes"
        )


# ---------------------------------------------------------------------------------------- evaluation


def evaluate_caption_loss(accelerator, model, cfg, tokenizer, data: EvalSet, num_frames, prefix):
    """Teacher-forced caption loss (per target token, each clip's first caption), its perplexity and the
    counts."""
    model.eval()
    try:
        out = make_evaluator(accelerator, model, cfg, tokenizer, num_frames).caption_loss(data)
    finally:
        model.train()
    return prefixed(prefix, out)


def make_validator(task: str, val, classes: list[str] | None):
    """``validate(accelerator, model, cfg, tokenizer, stage)`` for the loop; None: its retrieval default.
    ``classes``: the action classes, or for qa the answer vocabulary."""
    if task == "retrieval":
        return None

    def validate(accelerator, model, cfg, tokenizer, stage) -> dict[str, float]:
        if val is None:
            return {}
        frames = stage.num_frames or cfg.data.num_frames
        if task == "action":
            metrics = evaluate_action(accelerator, model, cfg, tokenizer, val, classes, frames, "val")
        elif task == "qa":
            protocols = ("rank", "classify") if model.qa.classifier is not None else ("rank",)
            metrics = evaluate_qa(accelerator, model, cfg, tokenizer, val, classes, frames, "val", protocols)
        else:
            metrics = evaluate_caption_loss(accelerator, model, cfg, tokenizer, val, frames, "val")
        accelerator.print(
            ", ".join(f"{k}={int(v)}" if "/data/" in k else f"{k}={v:.3f}" for k, v in metrics.items())
        )
        return metrics

    return validate


# ---------------------------------------------------------------------------------------------- main


def finetune(
    task: str,
    checkpoint: str | Path,
    cfg: Config,
    model_overrides: dict[str, Any],
    *,
    cpu: bool = False,
    resume: str | None = None,
    stop_after: int | None = None,
    label_smoothing: float = 0.1,
    score_captions: int = 0,
    top_answers: int = DEFAULT_TOP_ANSWERS,
    metrics_out: str | Path | None = None,
) -> dict[str, float]:
    """Fine-tune the model in ``checkpoint`` for ``task`` with the pretraining loop (see the module doc);
    ``cfg`` and ``model_overrides`` come from :func:`finetune_config`. Returns the final metrics (test
    split if configured, else validation), prints them and writes them to ``metrics_out`` (JSON)."""
    if task not in TASKS:
        raise ConfigError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    accelerator = make_accelerator(cfg, cpu=cpu)
    set_seed(cfg.train.seed)  # before loading: a new head's initialisation is part of the run
    out_dir = Path(cfg.train.output_dir)
    classes = None
    make_task = PretrainTask
    if cfg.data.demo:  # classes and validation clips are read before the loop would build the corpus
        with accelerator.main_process_first():
            generate_demo(cfg.data.demo_root, seed=cfg.data.demo_seed)
    val = None
    if cfg.data.val_manifest and task not in ("retrieval", "qa"):  # retrieval validates in the loop
        val = load_eval_set(cfg.data.val_manifest, cfg)
    if task != "qa":
        qa_sources = [s.name for s in cfg.stages if any(x.kind == "video-qa" for x in s.sources)]
        if qa_sources:
            raise ConfigError(f"stages {qa_sources} read video-qa sources, which only --task qa trains")
    if task == "qa":
        vocab = answer_vocab(cfg, top_answers)
        classes = list(vocab.answers)
        classify = any(s.losses.qa_classify > 0 for s in cfg.stages)
        asked = model_overrides.get("qa") or {}
        if "num_answers" in asked:
            raise ConfigError(
                f"model.qa.num_answers={asked['num_answers']}: leave it out, the tool sets it (the "
                f"vocabulary's {len(vocab)} answers when a stage weights losses.qa_classify, else 0)"
            )
        model_overrides["qa"] = asked | {"enabled": True, "num_answers": len(vocab) if classify else 0}
        if cfg.data.val_manifest:
            val = load_qa_eval_set(cfg.data.val_manifest, cfg)
        check_answers(Path(checkpoint), out_dir, vocab, model_overrides["qa"]["num_answers"])
        make_task = partial(QATask, vocab=vocab)
    elif task == "action":
        classes = action_classes(cfg)
        if model_overrides.get("num_classes", len(classes)) != len(classes):
            raise ConfigError(
                f"model.num_classes={model_overrides['num_classes']} but the training sources have "
                f"{len(classes)} classes; leave num_classes out, the tool sets it"
            )
        model_overrides["num_classes"] = len(classes)
        if val is not None:
            check_labels(val, classes)
        check_head_classes(Path(checkpoint), out_dir, classes)
        make_task = partial(RecognitionTask, label_smoothing=label_smoothing)
    elif task == "caption":
        silent = [s.name for s in cfg.stages if s.losses.caption <= 0]
        if silent:
            raise ConfigError(
                f"--task caption: stages {silent} have losses.caption 0; give each a caption weight"
            )
    model, ckpt_cfg = load_checkpoint(checkpoint, **model_overrides)
    cfg.model = ckpt_cfg.model
    accelerator.print(
        f"fine-tuning for {task} from {checkpoint}"
        + (f": {len(classes)} classes, label smoothing {label_smoothing}" if task == "action" else "")
        + (f": {len(classes)} answers (top {top_answers} of the training answers)" if task == "qa" else "")
    )
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        record = {"task": task, "checkpoint": str(Path(checkpoint).resolve())}
        record["model_overrides"] = model_overrides
        if task == "action":
            record["label_smoothing"] = label_smoothing
            (out_dir / CLASSES_NAME).write_text("\n".join(classes) + "\n")
        if task == "qa":
            record["top_answers"] = top_answers
            vocab.save(out_dir / ANSWERS_NAME)
        (out_dir / "finetune.json").write_text(json.dumps(record, indent=2) + "\n")
    # The loop's own test pass is retrieval; action and caption runs are tested below instead.
    test_manifest = cfg.data.test_manifest
    if task != "retrieval":
        cfg.data.test_manifest = None
    metrics = pretrain(
        cfg,
        accelerator,
        resume=resume,
        stop_after=stop_after,
        model=model,
        make_task=make_task,
        validate=make_validator(task, val, classes),
        answers_questions=task == "qa",
    )
    finished = stop_after is None or stop_after >= sum(s.steps for s in cfg.stages)
    # The loop ends the process group when training ends, so the test pass runs on the main process alone.
    if accelerator.is_main_process:
        if finished and task != "retrieval":
            # test numbers replace the validation ones, as in pretraining; caption scores of val clips join
            tested = _test(task, score_captions, accelerator, model, cfg, test_manifest, classes)
            metrics = ({} if test_manifest else metrics) | tested
        if task == "action" and (out_dir / "model").is_dir():
            (out_dir / "model" / CLASSES_NAME).write_text("\n".join(classes) + "\n")
        if task == "qa" and (out_dir / "model").is_dir():
            vocab.save(out_dir / "model" / ANSWERS_NAME)
        print(format_metrics(metrics))
        if metrics_out:
            Path(metrics_out).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def check_answers(checkpoint: Path, out_dir: Path, vocab: AnswerVocab, num_answers: int) -> None:
    """A classifier the checkpoint keeps (same answer count) and an earlier run into ``out_dir``
    (--resume) must mean the same answers in the same order."""
    config_file = checkpoint / CONFIG_NAME
    saved = read_yaml(config_file, what="checkpoint config") if config_file.is_file() else {}
    qa = (saved.get("model") or {}).get("qa") or {}
    kept = num_answers > 0 and qa.get("enabled") and qa.get("num_answers", 0) == num_answers
    for path in ([checkpoint / ANSWERS_NAME] if kept else []) + [out_dir / ANSWERS_NAME]:
        if path.is_file() and AnswerVocab.load(path).answers != vocab.answers:
            raise ConfigError(
                f"{path} lists other answers (or another order) than the top {len(vocab)} of the training "
                "questions; fine-tune into a fresh train.output_dir, or from a checkpoint without that head"
            )


def check_head_classes(checkpoint: Path, out_dir: Path, classes: list[str]) -> None:
    """A head the checkpoint keeps (same class count) and an earlier run into ``out_dir`` (--resume) must
    mean the same classes in the same order."""
    config_file = checkpoint / CONFIG_NAME
    saved = read_yaml(config_file, what="checkpoint config") if config_file.is_file() else {}
    kept = (saved.get("model") or {}).get("num_classes", 0) == len(classes)
    for path in ([checkpoint / CLASSES_NAME] if kept else []) + [out_dir / CLASSES_NAME]:
        if path.is_file() and path.read_text().splitlines() != classes:
            raise ConfigError(
                f"{path} lists other classes (or another order) than the training sources' {len(classes)} "
                "sorted labels; fine-tune into a fresh train.output_dir, or from a checkpoint without that "
                "head"
            )


def _test(
    task: str, score_captions: int, accelerator, model, cfg: Config, spec: str | None, classes
) -> dict[str, float]:
    tokenizer = load_tokenizer(cfg.model.text)
    metrics: dict[str, Any] = {}
    sets = {"test": spec} if spec else {}
    if score_captions and not spec and cfg.data.val_manifest:
        sets["val"] = cfg.data.val_manifest
    for prefix, manifest in sets.items():
        if task == "qa":  # every protocol that applies
            data = load_qa_eval_set(manifest, cfg)
            protocols = ("rank", "generate") + (("classify",) if model.qa.classifier is not None else ())
            metrics |= evaluate_qa(accelerator, model, cfg, tokenizer, data, classes, cfg.data.num_frames,
                                   prefix, protocols)  # fmt: skip
            continue
        data = load_eval_set(manifest, cfg)
        if task == "action":
            check_labels(data, classes)
            metrics |= evaluate_action(
                accelerator, model, cfg, tokenizer, data, classes, cfg.data.num_frames, prefix
            )
            continue
        if prefix == "test":
            metrics |= evaluate_caption_loss(
                accelerator, model, cfg, tokenizer, data, cfg.data.num_frames, prefix
            )
        if score_captions:
            metrics |= _score_captions(score_captions, accelerator, model, cfg, tokenizer, data, prefix)
    return metrics


def _score_captions(
    count: int, accelerator, model, cfg, tokenizer, data: EvalSet, prefix
) -> dict[str, float]:
    subset = EvalSet(data.name, data.samples[:count])
    out_file = Path(cfg.train.output_dir) / f"captions_{prefix}.json"
    model.eval()
    try:
        evaluator = make_evaluator(accelerator, model, cfg, tokenizer, cfg.data.num_frames)
        scores = evaluator.caption(subset, out_file)
    except (ImportError, RuntimeError) as err:  # no pycocoevalcap or no Java: the model is saved already
        accelerator.print(f"caption scoring skipped: {err}")
        return {}
    finally:
        model.train()
    accelerator.print(f"generated captions: {out_file}")
    return {f"{prefix}/{k}": v for k, v in scores.items() if k.startswith("caption/")}
