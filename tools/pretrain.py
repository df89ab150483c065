"""Pretrain a video-language model.

accelerate launch tools/pretrain.py                                   # demo: both stages, built-in data
accelerate launch tools/pretrain.py --config configs/my.yaml stages.1.steps=5000 train.mixed_precision=bf16
accelerate launch tools/pretrain.py --config configs/my.yaml --resume latest
accelerate launch tools/pretrain.py --config configs/my.yaml --resume auto    # requeued jobs: latest or fresh
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelerate.utils import set_seed

from videovl.cli import run_tool
from videovl.config import load_config
from videovl.train.accelerator import make_accelerator
from videovl.train.loop import pretrain

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/demo.yaml)")
    p.add_argument(
        "--resume",
        help="a checkpoint folder, 'latest' in train.output_dir/checkpoints, or 'auto' (the latest if "
        "there is one, else a fresh start)",
    )
    p.add_argument("--stop-after-steps", type=int, help="save and exit after this many steps of the run")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when an accelerator is present")
    p.add_argument("--metrics-out", help="write the final metrics to this JSON file")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. stages.0.steps=10")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    accelerator = make_accelerator(cfg, cpu=args.cpu)
    set_seed(cfg.train.seed)
    metrics = pretrain(cfg, accelerator, resume=args.resume, stop_after=args.stop_after_steps)
    if accelerator.is_main_process:
        print(format_table(metrics))
        if args.metrics_out:
            Path(args.metrics_out).write_text(json.dumps(metrics, indent=2))
    return metrics


def format_table(metrics: dict[str, float]) -> str:
    width = max((len(k) for k in metrics), default=10)
    return "\n".join(f"{k:<{width}}  {v:8.2f}" for k, v in sorted(metrics.items()))


if __name__ == "__main__":
    run_tool(main)
