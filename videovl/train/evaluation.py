"""Training's side of evaluation: an :class:`~videovl.eval.runner.Evaluator` built from the run's
accelerator and config, and the retrieval validation the loop runs by default.

Scoring itself lives in ``videovl/eval`` and is the code ``tools/evaluate.py`` runs, so a figure in a
training log (``val/video/t2v/R@1``, ``test/frame/v2t/R@5``, ...) is what that tool prints without the
prefix for the same checkpoint and split: unreadable clips left out and counted under ``.../data/...``,
scores a block of queries at a time. Only the glue that reads the accelerator is here.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from videovl.config import Config
from videovl.data.media.transforms import build_transform
from videovl.distributed import get_rank, get_world_size
from videovl.eval.benchmarks import EvalSet, QASet, load_manifest, load_qa_file
from videovl.eval.runner import Evaluator
from videovl.train.data import resolve_manifest

__all__ = [
    "autocast_dtype",
    "make_evaluator",
    "load_eval_set",
    "evaluate_retrieval",
    "evaluate_action",
    "load_qa_eval_set",
    "evaluate_qa",
    "prefixed",
]

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(accelerator: Accelerator) -> torch.dtype | None:
    """The dtype ``accelerator.autocast()`` computes in (None: float32), for code that takes a dtype."""
    return _AUTOCAST.get(str(accelerator.mixed_precision))


def make_evaluator(accelerator: Accelerator, model, cfg: Config, tokenizer, num_frames: int) -> Evaluator:
    """The evaluator for ``model`` as this run reads clips: its transform, backend, batch and text sizes,
    device and precision. The live process group shares the videos: it is the group the gathers use,
    and after the loop has ended it (``end_training``) one process does it all."""
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
        dtype=autocast_dtype(accelerator),
        rank=get_rank(),
        world_size=get_world_size(),
        show_progress=False,
    )


def load_eval_set(spec: str, cfg: Config) -> EvalSet:
    """A validation or test manifest (``demo:NAME`` or a path) as ``tools/evaluate.py --manifest`` reads
    it: samples whose file is absent are left out and counted under ``data/missing``."""
    return load_manifest(resolve_manifest(spec, cfg))


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


def evaluate_retrieval(
    accelerator: Accelerator, model, cfg: Config, data: EvalSet, tokenizer, num_frames: int, prefix: str
) -> dict[str, float]:
    """Text-to-clip and clip-to-text retrieval on ``data`` (every caption of a readable clip is a query)
    with global matching and, for clips of several temporal positions, frame-level matching, under
    ``{prefix}/``; the model is left in training mode."""
    model.eval()
    try:
        metrics = make_evaluator(accelerator, model, cfg, tokenizer, num_frames).retrieval(data)
    finally:
        model.train()
    return prefixed(prefix, metrics)


def evaluate_action(
    accelerator: Accelerator,
    model,
    cfg: Config,
    tokenizer,
    data: EvalSet,
    classes: list[str],
    num_frames: int,
    prefix: str,
    *,
    mode: str = "head",
    prompts: list[str] | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 / mean class accuracy (and the order pairs' accuracy where class names differ only by
    word order), one centre view per clip, and the counts, under ``{prefix}/``: ``mode`` "head" (a
    fine-tuned head) or "zero-shot" (class-name ``prompts`` through the text tower)."""
    model.eval()
    try:
        evaluator = make_evaluator(accelerator, model, cfg, tokenizer, num_frames)
        kwargs = {"prompts": prompts} if prompts else {}
        out = evaluator.action(data, classes, mode=mode, **kwargs)
    finally:
        model.train()
    return prefixed(prefix, {k: v for k, v in out.items() if k.startswith(("action/", "data/"))})


def load_qa_eval_set(spec: str, cfg: Config) -> QASet:
    """A validation or test question file (``demo:qa_val.jsonl`` or a path, MSRVTT-QA layout) as
    ``tools/evaluate.py --task qa --manifest`` reads it: questions whose video is absent are left out and
    counted."""
    return load_qa_file(resolve_manifest(spec, cfg))


def evaluate_qa(
    accelerator: Accelerator,
    model,
    cfg: Config,
    tokenizer,
    data: QASet,
    answers: list[str],
    num_frames: int,
    prefix: str,
    protocols: tuple[str, ...] = ("rank",),
) -> dict[str, float]:
    """QA accuracy per protocol and question type (``{prefix}/qa/rank/acc``, ...) and the counts, with
    ``answers`` (the training answer vocabulary) as the closed list and as the classifier's outputs."""
    model.eval()
    try:
        evaluator = make_evaluator(accelerator, model, cfg, tokenizer, num_frames)
        out = evaluator.qa(data, answers, protocols=protocols, classifier_answers=answers)
    finally:
        model.train()
    return prefixed(prefix, out)
