"""Fine-tune a pretraining checkpoint for retrieval, action recognition or captioning.

accelerate launch tools/finetune.py --task retrieval --checkpoint runs/demo/model
accelerate launch tools/finetune.py --task action --checkpoint runs/demo/model \\
    --config configs/finetune_action.yaml stages.0.steps=500 train.mixed_precision=bf16
accelerate launch tools/finetune.py --task caption --checkpoint runs/demo/model --score-captions 50
accelerate launch tools/finetune.py --task action --checkpoint runs/demo/model --resume latest

The pretraining loop runs unchanged (stages, save_state checkpoints, --resume, logging, mixed precision,
gradient accumulation and clipping) on the checkpoint's model and a task:
  retrieval  contrastive (+ frame-level) losses of the config's stages; validation: text-video retrieval
  caption    the caption loss alone; validation: caption loss on data.val_manifest
  action     cross-entropy of a new linear head on the clip embedding; validation: top-1 / top-5. A stage
             that freezes [visual, text, projections] is a linear probe, one that freezes nothing a full
             fine-tune.
The config's model section holds overrides of the checkpoint's model (e.g. vision.drop_path); the rest of
the model comes from the checkpoint, as do data.image_size / num_frames / mean / std unless the config
sets them. The fine-tuned model lands in train.output_dir/model, for tools/evaluate.py (for actions with
--mode head: the head's class list is written beside it as classes.txt, line index = output index).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import Subset

from videovl.config import Config, ConfigError, apply_overrides, deep_merge, from_dict
from videovl.data.collate import Collator
from videovl.data.datasets import ClipDataset, build_label_map
from videovl.data.demo import generate_demo
from videovl.data.loader import build_loader
from videovl.data.tokenizer import load_tokenizer
from videovl.data.transforms import build_transform
from videovl.distributed import get_rank, get_world_size
from videovl.eval.benchmarks import EvalSet, load_manifest
from videovl.eval.embed import shard_indices
from videovl.eval.runner import Evaluator, format_metrics
from videovl.losses.caption import caption_loss
from videovl.models.checkpoint import CONFIG_NAME, load_checkpoint
from videovl.models.factory import model_config
from videovl.models.pretrained import foreign_model_config
from videovl.tasks.pretrain import PretrainTask
from videovl.tasks.recognition import RecognitionTask
from videovl.train.accelerator import make_accelerator
from videovl.train.data import load_source, resolve_manifest
from videovl.train.loop import pretrain

TASKS = ("retrieval", "action", "caption")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# What the checkpoint's encoder was trained to read; the fine-tuning config inherits them unless it sets them.
INHERITED_DATA = ("image_size", "num_frames", "mean", "std")
CLASSES_NAME = "classes.txt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a model folder written by pretraining (save_checkpoint), or a local CLIP (transformers "
        "folder or open_clip state dict), TimeSformer or VideoMAE folder",
    )
    p.add_argument("--config", help="YAML config (default: configs/finetune_TASK.yaml)")
    p.add_argument("--resume", help="a checkpoint folder, or 'latest' in train.output_dir/checkpoints")
    p.add_argument("--stop-after-steps", type=int, help="save and exit after this many steps of the run")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when an accelerator is present")
    p.add_argument("--metrics-out", help="write the final metrics to this JSON file")
    p.add_argument("--label-smoothing", type=float, help="action: cross-entropy smoothing (default: 0.1)")
    p.add_argument(
        "--score-captions",
        type=int,
        default=0,
        metavar="N",
        help="caption: after training, generate captions for the first N test (else val) clips and score "
        "them with pycocoevalcap (needs Java); 0: off",
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. stages.0.steps=10")
    args = p.parse_args(argv)
    if args.label_smoothing is not None and args.task != "action":
        p.error("--label-smoothing applies to --task action only")
    args.label_smoothing = 0.1 if args.label_smoothing is None else args.label_smoothing
    if args.score_captions and args.task != "caption":
        p.error("--score-captions applies to --task caption only")
    args.config = args.config or str(CONFIGS / f"finetune_{args.task}.yaml")
    return args


# -------------------------------------------------------------------------------------------- config


def build_config(config: str | Path, overrides: list[str], checkpoint: str | Path) -> tuple[Config, dict]:
    """The fine-tuning config (its model section still the pretraining default) and the model overrides
    (the config's ``model`` section with ``model.*`` command-line overrides applied)."""
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    raw = apply_overrides(raw, overrides)
    model_overrides = raw.pop("model", None) or {}
    if "name" in model_overrides:
        raise ConfigError(
            f"model.name={model_overrides['name']!r}: the architecture comes from the checkpoint; the "
            "model section may only override fields of it (e.g. vision.drop_path, num_classes)"
        )
    saved = Path(checkpoint) / CONFIG_NAME
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
        saved_data = (yaml.safe_load(saved.read_text()) or {}).get("data") or {}
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
        samples = [
            x for j, s in enumerate(stage.sources) for x in load_source(s, cfg, f"stages.{i}.sources.{j}")
        ]
        per_stage.append(list(build_label_map(samples)))
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


def _check_labels(data: EvalSet, classes: list[str]) -> None:
    unknown = sorted({s.label for s in data.samples if s.label is not None} - set(classes))
    unlabelled = [s.path for s in data.samples if s.label is None]
    if unknown or unlabelled:
        raise ConfigError(
            f"{data.name}: {len(unknown)} labels are not among the {len(classes)} training classes "
            f"(e.g. {unknown[:3]}) and {len(unlabelled)} samples have no label; action validation and "
            "test manifests need labels from the training set's classes"
        )


# ---------------------------------------------------------------------------------------- evaluation


def _evaluator(accelerator: Accelerator, model, cfg: Config, tokenizer, num_frames: int) -> Evaluator:
    return Evaluator(
        model,
        tokenizer,
        build_transform(cfg.data, train=False),
        accelerator.device,
        num_frames=num_frames,
        batch_size=cfg.eval.batch_size,
        num_workers=min(cfg.data.num_workers, 1),
        backend=cfg.data.backend,
        text_length=cfg.model.text.max_length,
        chunk_size=cfg.eval.chunk_size,
    )


def evaluate_action(accelerator, model, cfg, tokenizer, data: EvalSet, classes, num_frames, prefix):
    """Top-1 / top-5 / mean class accuracy of the head, one centre view per clip."""
    model.eval()
    try:
        with accelerator.autocast():
            out = _evaluator(accelerator, model, cfg, tokenizer, num_frames).action(
                data, classes, mode="head"
            )
    finally:
        model.train()
    return {f"{prefix}/{k}": v for k, v in out.items() if k.startswith("action/")}


@torch.no_grad()
def evaluate_caption_loss(accelerator, model, cfg, tokenizer, data: EvalSet, num_frames, prefix):
    """Teacher-forced caption loss (per target token, each clip's first caption) and its perplexity."""
    dataset = ClipDataset(
        data.samples,
        num_frames=num_frames,
        transform=build_transform(cfg.data, train=False),
        train=False,
        backend=cfg.data.backend,
        text="caption",
    )
    # The live process group decides the sharding: after the loop has ended it, one process does it all.
    world = get_world_size()
    shard = Subset(dataset, shard_indices(len(dataset), get_rank(), world))
    loader = build_loader(
        shard,
        batch_size=cfg.eval.batch_size,
        collate_fn=Collator(tokenizer, cfg.model.text.max_length),
        num_workers=min(cfg.data.num_workers, 1),
    )
    total = torch.zeros(2, device=accelerator.device)  # (loss summed over tokens, tokens)
    model.eval()
    try:
        for batch in loader:
            keep = batch["valid"]  # unreadable clips arrive as flagged placeholders
            if not keep.any():
                continue
            pixels, ids, mask = (
                batch[k][keep].to(accelerator.device) for k in ("pixels", "input_ids", "attention_mask")
            )
            with accelerator.autocast():
                logits = model.caption(ids, mask, model.encode_video(pixels).tokens)
            tokens = mask[:, 1:].sum()
            total += torch.stack([caption_loss(logits, ids, mask)["caption_loss"] * tokens, tokens.float()])
    finally:
        model.train()
    total = accelerator.reduce(total, "sum") if world > 1 else total
    loss = float(total[0] / total[1].clamp_min(1))
    return {f"{prefix}/caption_loss": loss, f"{prefix}/caption_ppl": math.exp(min(loss, 50.0))}


def make_validator(task: str, val: EvalSet | None, classes: list[str] | None):
    """``validate(accelerator, model, cfg, tokenizer, stage)`` for the loop; None: its retrieval default."""
    if task == "retrieval":
        return None

    def validate(accelerator, model, cfg, tokenizer, stage) -> dict[str, float]:
        if val is None:
            return {}
        frames = stage.num_frames or cfg.data.num_frames
        if task == "action":
            metrics = evaluate_action(accelerator, model, cfg, tokenizer, val, classes, frames, "val")
        else:
            metrics = evaluate_caption_loss(accelerator, model, cfg, tokenizer, val, frames, "val")
        accelerator.print(", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        return metrics

    return validate


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    cfg, model_overrides = build_config(args.config, args.overrides, args.checkpoint)
    accelerator = make_accelerator(cfg, cpu=args.cpu)
    set_seed(cfg.train.seed)  # before loading: a new head's initialisation is part of the run
    out_dir = Path(cfg.train.output_dir)
    classes = None
    make_task = PretrainTask
    if cfg.data.demo:  # classes and validation clips are read before the loop would build the corpus
        with accelerator.main_process_first():
            generate_demo(cfg.data.demo_root, seed=cfg.data.demo_seed)
    val = None
    if cfg.data.val_manifest and args.task != "retrieval":  # retrieval validates in the loop
        val = load_manifest(resolve_manifest(cfg.data.val_manifest, cfg))
    if args.task == "action":
        classes = action_classes(cfg)
        if model_overrides.get("num_classes", len(classes)) != len(classes):
            raise ConfigError(
                f"model.num_classes={model_overrides['num_classes']} but the training sources have "
                f"{len(classes)} classes; leave num_classes out, the tool sets it"
            )
        model_overrides["num_classes"] = len(classes)
        if val is not None:
            _check_labels(val, classes)
        _check_head_classes(Path(args.checkpoint), out_dir, classes)
        make_task = partial(RecognitionTask, label_smoothing=args.label_smoothing)
    elif args.task == "caption":
        silent = [s.name for s in cfg.stages if s.losses.caption <= 0]
        if silent:
            raise ConfigError(
                f"--task caption: stages {silent} have losses.caption 0; give each a caption weight"
            )
    model, ckpt_cfg = load_checkpoint(args.checkpoint, **model_overrides)
    cfg.model = ckpt_cfg.model
    accelerator.print(
        f"fine-tuning for {args.task} from {args.checkpoint}"
        + (f": {len(classes)} classes, label smoothing {args.label_smoothing}" if classes else "")
    )
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        record = {"task": args.task, "checkpoint": str(Path(args.checkpoint).resolve())}
        record["model_overrides"] = model_overrides
        if classes:
            record["label_smoothing"] = args.label_smoothing
            (out_dir / CLASSES_NAME).write_text("\n".join(classes) + "\n")
        (out_dir / "finetune.json").write_text(json.dumps(record, indent=2) + "\n")
    # The loop's own test pass is retrieval; action and caption runs are tested below instead.
    test_manifest = cfg.data.test_manifest
    if args.task != "retrieval":
        cfg.data.test_manifest = None
    metrics = pretrain(
        cfg,
        accelerator,
        resume=args.resume,
        stop_after=args.stop_after_steps,
        model=model,
        make_task=make_task,
        validate=make_validator(args.task, val, classes),
    )
    finished = args.stop_after_steps is None or args.stop_after_steps >= sum(s.steps for s in cfg.stages)
    # The loop ends the process group when training ends, so the test pass runs on the main process alone.
    if accelerator.is_main_process:
        if finished and args.task != "retrieval":
            # test numbers replace the validation ones, as in pretraining; caption scores of val clips join
            tested = _test(args, accelerator, model, cfg, test_manifest, classes)
            metrics = ({} if test_manifest else metrics) | tested
        if classes and (out_dir / "model").is_dir():
            (out_dir / "model" / CLASSES_NAME).write_text("\n".join(classes) + "\n")
        print(format_metrics(metrics))
        if args.metrics_out:
            Path(args.metrics_out).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _check_head_classes(checkpoint: Path, out_dir: Path, classes: list[str]) -> None:
    """A head the checkpoint keeps (same class count) and an earlier run into ``out_dir`` (--resume) must
    mean the same classes in the same order."""
    config_file = checkpoint / CONFIG_NAME
    saved = (yaml.safe_load(config_file.read_text()) or {}) if config_file.is_file() else {}
    kept = (saved.get("model") or {}).get("num_classes", 0) == len(classes)
    for path in ([checkpoint / CLASSES_NAME] if kept else []) + [out_dir / CLASSES_NAME]:
        if path.is_file() and path.read_text().splitlines() != classes:
            raise ConfigError(
                f"{path} lists other classes (or another order) than the training sources' {len(classes)} "
                "sorted labels; fine-tune into a fresh train.output_dir, or from a checkpoint without that "
                "head"
            )


def _test(args, accelerator, model, cfg: Config, spec: str | None, classes) -> dict[str, float]:
    tokenizer = load_tokenizer(cfg.model.text)
    metrics: dict[str, Any] = {}
    sets = {"test": spec} if spec else {}
    if args.score_captions and not spec and cfg.data.val_manifest:
        sets["val"] = cfg.data.val_manifest
    for prefix, manifest in sets.items():
        data = load_manifest(resolve_manifest(manifest, cfg))
        if args.task == "action":
            _check_labels(data, classes)
            metrics |= evaluate_action(
                accelerator, model, cfg, tokenizer, data, classes, cfg.data.num_frames, prefix
            )
            continue
        if prefix == "test":
            metrics |= evaluate_caption_loss(
                accelerator, model, cfg, tokenizer, data, cfg.data.num_frames, prefix
            )
        if args.score_captions:
            metrics |= _score_captions(args, accelerator, model, cfg, tokenizer, data, prefix)
    return metrics


def _score_captions(args, accelerator, model, cfg, tokenizer, data: EvalSet, prefix) -> dict[str, float]:
    subset = EvalSet(data.name, data.samples[: args.score_captions])
    out_file = Path(cfg.train.output_dir) / f"captions_{prefix}.json"
    model.eval()
    try:
        scores = _evaluator(accelerator, model, cfg, tokenizer, cfg.data.num_frames).caption(subset, out_file)
    except (ImportError, RuntimeError) as err:  # no pycocoevalcap or no Java: the model is saved already
        accelerator.print(f"caption scoring skipped: {err}")
        return {}
    finally:
        model.train()
    accelerator.print(f"generated captions: {out_file}")
    return {f"{prefix}/{k}": v for k, v in scores.items() if k.startswith("caption/")}


if __name__ == "__main__":
    main(sys.argv[1:])
