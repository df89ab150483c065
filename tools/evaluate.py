"""Evaluate a checkpoint: retrieval, action recognition, captioning or question answering, on a manifest
(a question file for qa) or a benchmark.

python tools/evaluate.py --checkpoint runs/demo/model --task retrieval \\
    --manifest data/moving_digits/video_test.jsonl
python tools/evaluate.py --checkpoint CKPT --task retrieval --benchmark msrvtt \\
    --annotations MSRVTT_JSFUSION_test.csv --video-root msrvtt/videos --output msrvtt.json
python tools/evaluate.py --checkpoint CKPT --task retrieval --manifest test.jsonl \\
    --html worst.html --html-queries 50      # a page: the worst-ranked queries with their hits' frames
python tools/evaluate.py --checkpoint CKPT --task action --benchmark k400 \\
    --annotations kinetics400/ --video-root k400/val --mode zero-shot --views 4x3
python tools/evaluate.py --checkpoint CKPT --task caption --manifest test.jsonl --num-beams 3 \\
    --output caption.json
python tools/evaluate.py --checkpoint runs/finetune_qa/model --task qa \
    --manifest data/moving_digits/qa_test.jsonl --protocol all
python tools/evaluate.py --checkpoint CKPT --task qa --benchmark activitynet-qa \
    --annotations activitynet-qa/dataset --video-root anet/videos
accelerate launch tools/evaluate.py ...    # video embedding sharded over the processes

Retrieval reports the plain dual-encoder numbers (t2v/..., v2t/...) and, apart and labelled, frame-level
matching (frame/...), dual softmax (dsl/..., --dual-softmax) and alignment-decoder re-ranking of the top-K
(rerank/..., on by default with the checkpoint's K when it has an alignment decoder; --rerank-k 0 is off).
QA reports each protocol apart (qa/rank/..., qa/generate/..., qa/classify/...), overall and per type.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from accelerate import Accelerator

from videovl.cli import run_tool
from videovl.config import ConfigError
from videovl.data.annotations.activitynet_qa import SPLITS as QA_SPLITS
from videovl.data.answers import AnswerVocab, normalize_answer
from videovl.data.datasets import DEFAULT_PROMPTS
from videovl.data.media.transforms import build_transform
from videovl.data.tokenizer import load_tokenizer
from videovl.eval.benchmarks import (
    BENCHMARKS,
    EvalSet,
    load_benchmark,
    load_manifest,
    load_qa_benchmark,
    load_qa_file,
    resolve_classes,
)
from videovl.eval.pages import Answer, FrameStrips, evaluation_queries, qa_page, retrieval_page
from videovl.eval.qa import QA_PROTOCOLS
from videovl.eval.retrieval import RankedQueries
from videovl.eval.runner import ACTION_MODES, Evaluator, format_metrics
from videovl.models.checkpoint import load_checkpoint, require_checkpoint
from videovl.train.finetune import ANSWERS_NAME  # the vocabulary --task qa writes beside the model

TASKS = ("retrieval", "action", "caption", "qa")
DEFAULT_VIEWS = {"k400": "4x3"}  # others: 1x1
# The re-ranking score adds the dual encoder's logit to the decoder's log-odds. On two demo checkpoints
# the decoder alone put t2v R@1 at 5.0 and 9.2 against the dual encoder's 12.5 and 23.3; the sum gave
# 14.2 and 23.3 (the second lowering R@5 and v2t R@1): the sum, unlike the decoder alone, keeps t2v R@1.
RERANK_DUAL_WEIGHT = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a model folder written by save_checkpoint, or for a zero-shot baseline another library's "
        "local video-text checkpoint: CLIP (transformers folder or open_clip state dict, PE-Core's "
        "included), SigLIP, MetaCLIP 2 or VideoPrism video-text folder",
    )
    p.add_argument("--task", required=True, choices=TASKS)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="a JSON Lines manifest (see videovl.data.sources.manifest)")
    source.add_argument("--benchmark", choices=sorted(BENCHMARKS))
    p.add_argument("--annotations", help="benchmark annotation file, or the folder holding it")
    p.add_argument("--video-root", help="folder of the benchmark's videos (searched recursively)")
    p.add_argument("--output", help="write the metrics to this JSON file")
    p.add_argument(
        "--batch-size", type=int, help="clips per batch (default: the checkpoint's eval.batch_size)"
    )
    p.add_argument(
        "--num-frames", type=int, help="frames per clip (default: the checkpoint's data.num_frames)"
    )
    p.add_argument("--num-workers", type=int, default=2, help="decoding worker processes (default: 2)")
    p.add_argument("--text-length", type=int, help="tokens per caption (default: model.text.max_length)")
    p.add_argument("--dual-softmax", action="store_true", help="also report dual-softmax retrieval (dsl/)")
    p.add_argument(
        "--rerank-k", type=int, help="re-rank each query's top K with the alignment decoder; 0: off"
    )
    p.add_argument(
        "--rerank-dual-weight",
        type=float,
        default=RERANK_DUAL_WEIGHT,
        help="re-ranking score: the decoder's match log-odds + this x the dual encoder's logit "
        f"(default: {RERANK_DUAL_WEIGHT}; 0: the decoder alone)",
    )
    p.add_argument(
        "--views", help="action test views CLIPSxCROPS, crops 1 or 3 (default: 4x3 for k400, else 1x1)"
    )
    p.add_argument(
        "--mode", choices=ACTION_MODES, default="zero-shot", help="action: prompts or fine-tuned head"
    )
    p.add_argument("--prompt", action="append", help="zero-shot template with {label}; repeat to ensemble")
    p.add_argument("--classes", help="action class names, one a line (line index = class id)")
    p.add_argument("--predictions", help="action: write each video's predicted class and top-5 (JSON)")
    p.add_argument("--num-beams", type=int, default=1, help="caption beam width (1: greedy)")
    p.add_argument(
        "--captions-out",
        help="where the generated captions go (default: --output with .captions.json for its suffix, e.g. "
        "caption.json -> caption.captions.json; captions.json without --output)",
    )
    p.add_argument(
        "--html",
        metavar="PAGE",
        help="retrieval: also write one self-contained HTML page of the worst-ranked queries, each with its "
        "hits' frames, scores and captions and the true clip marked; qa: of the questions (wrong answers "
        "first), each with the video's frames and the answer given and expected (the first --protocol)",
    )
    p.add_argument(
        "--html-queries", type=int, default=50, help="queries on the --html page, worst first (default: 50)"
    )
    p.add_argument("--html-hits", type=int, default=5, help="hits per query on the --html page (default: 5)")
    p.add_argument(
        "--protocol",
        action="append",
        choices=(*QA_PROTOCOLS, "all"),
        help="qa: rank (the closed answer list; default), generate (greedy, or --num-beams; exact match), "
        "classify (the answer classifier); repeat for several, 'all' for those the checkpoint supports",
    )
    p.add_argument(
        "--answer-list",
        help="qa: the closed answer list to rank (a JSON list; default: the benchmark's own list if it has "
        "one, else the checkpoint's answers.json)",
    )
    p.add_argument("--shortlist-k", type=int, default=128, help="qa/rank: first-token shortlist size")
    p.add_argument("--split", choices=QA_SPLITS, default="test", help="activitynet-qa / msrvtt-qa split")
    p.add_argument(
        "--blank-video", action="store_true", help="qa: zero every clip (the question-only baseline)"
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when an accelerator is present")
    args = p.parse_args(argv)
    if args.html and args.task not in ("retrieval", "qa"):
        p.error(f"--html writes a retrieval or qa page; --task {args.task} has none")
    if args.html_queries < 1 or args.html_hits < 1:
        p.error(f"--html-queries and --html-hits must be >= 1, got {args.html_queries} and {args.html_hits}")
    if args.predictions and args.task not in ("action", "qa"):
        p.error(f"--predictions writes action or qa predictions; --task {args.task} has none")
    qa_only = {
        "--protocol": args.protocol,
        "--answer-list": args.answer_list,
        "--blank-video": args.blank_video,
    }
    used = [flag for flag, value in qa_only.items() if value]
    if used and args.task != "qa":
        p.error(f"{', '.join(used)} apply to --task qa only")
    if args.benchmark:
        if not (args.annotations and args.video_root):
            p.error(f"--benchmark {args.benchmark} needs --annotations and --video-root")
        if args.task not in BENCHMARKS[args.benchmark][1]:
            p.error(
                f"--benchmark {args.benchmark} supports --task {' or '.join(BENCHMARKS[args.benchmark][1])}"
            )
    views = args.views or DEFAULT_VIEWS.get(args.benchmark, "1x1")
    match = re.fullmatch(r"(\d+)x([13])", views)
    if not match or int(match[1]) < 1:
        p.error(f"--views {views!r}: expected CLIPSxCROPS with CLIPS >= 1 and CROPS 1 or 3, e.g. 4x3")
    args.views = (int(match[1]), int(match[2]))
    return args


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    require_checkpoint(args.checkpoint, "--checkpoint")  # a mistyped path says so, first
    accelerator = Accelerator(cpu=args.cpu)
    model, cfg = load_checkpoint(args.checkpoint)
    model.to(accelerator.device).eval()
    if args.task == "qa":
        data = (
            load_qa_file(args.manifest)
            if args.manifest
            else load_qa_benchmark(args.benchmark, args.annotations, args.video_root, args.split)
        )
    else:
        data = (
            load_manifest(args.manifest)
            if args.manifest
            else load_benchmark(args.benchmark, args.annotations, args.video_root)
        )
    accelerator.print(
        f"evaluating {args.task} on {accelerator.num_processes} process(es), {accelerator.device}"
    )
    evaluator = Evaluator(
        model,
        load_tokenizer(cfg.model.text),
        build_transform(cfg.data, train=False),
        accelerator.device,
        num_frames=args.num_frames or cfg.data.num_frames,
        batch_size=args.batch_size or cfg.eval.batch_size,
        num_workers=args.num_workers,
        backend=cfg.data.backend,
        text_length=args.text_length or cfg.model.text.max_length,
        chunk_size=cfg.eval.chunk_size,
    )
    if args.task == "retrieval":
        rerank_k = args.rerank_k
        if rerank_k is None:
            rerank_k = cfg.model.alignment.rerank_k if model.alignment is not None else 0
        kwargs = {"dual_softmax": args.dual_softmax, "rerank_k": rerank_k}
        kwargs["rerank_dual_weight"] = args.rerank_dual_weight
        if args.html:
            metrics, ranked = evaluator.retrieval_report(data, top_k=args.html_hits, **kwargs)
            if accelerator.is_main_process:
                write_page(args, data, metrics, ranked, cfg.data.backend)
        else:
            metrics = evaluator.retrieval(data, **kwargs)
    elif args.task == "action":
        classes_file = args.classes
        head_classes = Path(args.checkpoint) / "classes.txt"  # written beside a fine-tuned head, if any
        if classes_file is None and args.mode == "head" and head_classes.is_file():
            classes_file = head_classes
        classes = resolve_classes(data, classes_file)
        prompts = args.prompt or [DEFAULT_PROMPTS["video"]]
        metrics = evaluator.action(
            data, classes, mode=args.mode, prompts=prompts, views=args.views, predictions_out=args.predictions
        )
        if args.predictions:
            accelerator.print(f"predictions: {args.predictions}")
    elif args.task == "qa":
        metrics = _qa(args, evaluator, model, data, cfg.data.backend)
        if args.predictions:
            accelerator.print(f"predictions: {args.predictions}")
    else:
        out = args.captions_out or (
            Path(args.output).with_suffix(".captions.json") if args.output else "captions.json"
        )
        metrics = evaluator.caption(data, out, num_beams=args.num_beams)
        accelerator.print(f"generated captions: {out}")
    if accelerator.is_main_process:
        print(data.summary())
        print(format_metrics(metrics))
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def write_page(
    args: argparse.Namespace, data: EvalSet, metrics: dict[str, float], ranked: RankedQueries, backend: str
) -> None:
    strips = FrameStrips(backend=backend)
    queries = evaluation_queries(ranked, data.samples, args.html_queries, strips)
    summary = {"checkpoint": args.checkpoint, "data": data.name}
    summary |= {k: f"{metrics[k]:.2f}" for k in ("t2v/R@1", "t2v/R@5", "t2v/MdR") if k in metrics}
    summary["shown"] = f"the {len(queries)} of {len(ranked.texts)} queries whose true clip ranked lowest"
    summary["ranked by"] = "the dual encoder's cosine (t2v/...)"
    summary["unreadable videos"] = len(strips.unreadable)
    Path(args.html).parent.mkdir(parents=True, exist_ok=True)
    Path(args.html).write_text(retrieval_page("retrieval evaluation", queries, summary), encoding="utf-8")
    print(f"page: {args.html} ({len(queries)} queries, {len(strips.unreadable)} unreadable videos)")


def _qa(args, evaluator: Evaluator, model, data, backend: str) -> dict[str, float]:
    if model.qa is None:
        raise ConfigError(
            f"--checkpoint {args.checkpoint} has no question-answering head: fine-tune one with "
            "tools/finetune.py --task qa"
        )
    vocab_file = Path(args.checkpoint) / ANSWERS_NAME
    vocab = AnswerVocab.load(vocab_file) if vocab_file.is_file() else None
    classifier = model.qa is not None and model.qa.classifier is not None
    protocols = args.protocol or ["rank"]
    if "all" in protocols:
        protocols = ["rank", "generate"] + (["classify"] if classifier else [])
    protocols = list(dict.fromkeys(protocols))
    if args.answer_list:
        answers = list(AnswerVocab.load(args.answer_list).answers)
    elif data.answer_list is not None:
        answers = data.answer_list
    elif vocab is not None:
        answers = list(vocab.answers)
    else:
        answers = []
    if "rank" in protocols and not answers:
        raise ConfigError(
            f"qa/rank needs a closed answer list: {vocab_file} is absent and the benchmark has none; pass "
            "--answer-list FILE (a JSON list of answers)"
        )
    if "classify" in protocols and (not classifier or vocab is None):
        raise ConfigError(
            f"qa/classify needs a checkpoint fine-tuned with the answer classifier and its {ANSWERS_NAME} "
            f"({args.checkpoint} has {'no classifier' if not classifier else f'no {ANSWERS_NAME}'})"
        )
    with tempfile.TemporaryDirectory() as tmp:  # the page reads the predictions back
        predictions = args.predictions or (str(Path(tmp) / "predictions.json") if args.html else None)
        metrics = evaluator.qa(
            data,
            answers,
            protocols=protocols,
            classifier_answers=list(vocab.answers) if vocab is not None else None,
            k=args.shortlist_k,
            num_beams=args.num_beams,
            blank_video=args.blank_video,
            predictions_out=predictions,
        )
        if args.html and evaluator.rank == 0:
            rows = json.loads(Path(predictions).read_text())
            write_qa_page(args, data, metrics, rows, protocols[0], backend)
    return metrics


def write_qa_page(
    args, data, metrics: dict[str, float], rows: list[dict], protocol: str, backend: str
) -> None:
    """The questions with the ``protocol``'s answers, wrong ones first (then in file order)."""
    strips = FrameStrips(backend=backend)
    judged = []
    for row in rows:
        given = row.get(protocol)
        correct = given is not None and normalize_answer(given) == normalize_answer(row["answer"])
        judged.append((correct, row, given))
    judged.sort(key=lambda item: item[0])  # stable: wrong answers first, each group in file order
    answers = [
        Answer(row["question"], given if given is not None else "(no answer)", row["answer"], correct,
               name=row["video"], strip=strips(row["video"]), kind=row.get("type"))
        for correct, row, given in judged[: args.html_queries]
    ]  # fmt: skip
    summary = {"checkpoint": args.checkpoint, "data": data.name, "protocol": f"qa/{protocol}"}
    if f"qa/{protocol}/acc" in metrics:
        summary["accuracy"] = f"{metrics[f'qa/{protocol}/acc']:.2f}"
    summary["shown"] = f"{len(answers)} of {len(rows)} questions, wrong answers first"
    summary["unreadable videos"] = len(strips.unreadable)
    Path(args.html).parent.mkdir(parents=True, exist_ok=True)
    Path(args.html).write_text(qa_page("question answering", answers, summary), encoding="utf-8")
    print(f"page: {args.html} ({len(answers)} questions, {len(strips.unreadable)} unreadable videos)")


if __name__ == "__main__":
    run_tool(main)
