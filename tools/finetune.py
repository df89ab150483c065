"""Fine-tune a pretraining checkpoint for retrieval, action recognition, captioning or question answering.

accelerate launch tools/finetune.py --task retrieval --checkpoint runs/demo/model
accelerate launch tools/finetune.py --task action --checkpoint runs/demo/model \\
    --config configs/finetune_action.yaml stages.0.steps=500 train.mixed_precision=bf16
accelerate launch tools/finetune.py --task caption --checkpoint runs/demo/model --score-captions 50
accelerate launch tools/finetune.py --task action --checkpoint runs/demo/model --resume latest
accelerate launch tools/finetune.py --task qa --checkpoint runs/demo/model --config configs/finetune_qa.yaml

What each task trains and validates: videovl.train.finetune.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from videovl.cli import run_tool
from videovl.train.finetune import DEFAULT_TOP_ANSWERS, TASKS, finetune, finetune_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a model folder written by pretraining (save_checkpoint), or another library's local "
        "checkpoint: CLIP (transformers folder or open_clip state dict, PE-Core's included), SigLIP, "
        "MetaCLIP 2 or VideoPrism video-text folder (both towers), TimeSformer, VideoMAE, V-JEPA 2 or "
        "VideoPrism video folder (the visual tower)",
    )
    p.add_argument("--config", help="YAML config (default: configs/finetune_TASK.yaml)")
    p.add_argument(
        "--resume",
        help="a checkpoint folder, 'latest' in train.output_dir/checkpoints, or 'auto' (the latest if "
        "there is one, else a fresh start)",
    )
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
    p.add_argument(
        "--top-answers",
        type=int,
        metavar="N",
        help="qa: the answer vocabulary is the N most frequent training answers (default: 1500)",
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. stages.0.steps=10")
    args = p.parse_args(argv)
    if args.label_smoothing is not None and args.task != "action":
        p.error("--label-smoothing applies to --task action only")
    args.label_smoothing = 0.1 if args.label_smoothing is None else args.label_smoothing
    if args.score_captions and args.task != "caption":
        p.error("--score-captions applies to --task caption only")
    if args.top_answers is not None and args.task != "qa":
        p.error("--top-answers applies to --task qa only")
    if args.top_answers is not None and args.top_answers < 1:
        p.error(f"--top-answers {args.top_answers}: expected at least 1")
    args.top_answers = args.top_answers or DEFAULT_TOP_ANSWERS
    args.config = args.config or str(CONFIGS / f"finetune_{args.task}.yaml")
    return args


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    cfg, model_overrides = finetune_config(args.config, args.overrides, args.checkpoint)
    return finetune(
        args.task,
        args.checkpoint,
        cfg,
        model_overrides,
        cpu=args.cpu,
        resume=args.resume,
        stop_after=args.stop_after_steps,
        label_smoothing=args.label_smoothing,
        score_captions=args.score_captions,
        top_answers=args.top_answers,
        metrics_out=args.metrics_out,
    )


if __name__ == "__main__":
    run_tool(main)
