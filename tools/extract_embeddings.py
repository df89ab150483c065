"""Extract clip, frame and caption embeddings with a trained checkpoint.

python tools/extract_embeddings.py --checkpoint runs/demo/model --manifest data/test.jsonl --out emb/
python tools/extract_embeddings.py --checkpoint runs/demo/model --input videos/ --out emb/ --index
accelerate launch tools/extract_embeddings.py --checkpoint CKPT --manifest FILE --out emb/ --shard-size 512

The inputs are cut into shards of --shard-size clips; each process takes every world_size-th shard and
writes each one, when done, to OUT/shards/ (the folder must be shared by all processes). A rerun skips
finished shards. The main process then merges them in input order; videovl/eval/extract.py documents the
files written. Unreadable inputs are listed in OUT/unreadable.txt and left out of the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from accelerate import Accelerator

from videovl.cli import run_tool
from videovl.config import save_config
from videovl.data.tokenizer import load_tokenizer
from videovl.eval.embed import shard_indices
from videovl.eval.extract import (
    INDEX_NAME,
    check_spec,
    embed_shards,
    eval_dataset,
    extraction_spec,
    list_inputs,
    merge_shards,
    shard_path,
    shard_ranges,
    write_outputs,
    write_shard,
    write_spec,
)
from videovl.extras import require
from videovl.models.checkpoint import load_checkpoint, require_checkpoint
from videovl.progress import progress
from videovl.train.mining import build_index

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model folder written by pretraining (…/model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="JSON Lines manifest; captions get text embeddings")
    src.add_argument("--input", help="a folder of videos (recursive) or one video or image file")
    p.add_argument("--root", help="folder the manifest's relative paths resolve against")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-frames", type=int, help="frames per clip (default: checkpoint data.num_frames)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes per process")
    p.add_argument("--format", choices=("safetensors", "npy"), default="safetensors")
    p.add_argument("--shard-size", type=int, default=1024, help="clips per resumable shard")
    p.add_argument(
        "--index",
        action="store_true",
        help=f"also write a faiss index (OUT/{INDEX_NAME}; needs faiss-cpu, extra [train])",
    )
    p.add_argument("--ivf-threshold", type=int, default=50_000, help="exact index below this many clips")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when an accelerator is present")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    for name in ("batch_size", "shard_size", "num_frames"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_checkpoint(args.checkpoint, "--checkpoint")  # a mistyped path says so, first
    if args.index:  # before the extraction, not after it
        require("faiss", "--index")
    cpu = args.cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    accelerator = Accelerator(cpu=cpu)
    is_main, out = accelerator.is_main_process, Path(args.out)
    samples = list_inputs(args.manifest, args.input, args.root)  # a wrong input fails before the model loads
    model, cfg = load_checkpoint(args.checkpoint)
    model.eval().to(accelerator.device)
    tokenizer = load_tokenizer(cfg.model.text)
    cfg.data.num_frames = args.num_frames or cfg.data.num_frames
    spec = extraction_spec(args.checkpoint, samples, cfg.data.num_frames, args.shard_size)
    check_spec(out, spec)  # every process reads the same earlier spec, so all stop together
    accelerator.wait_for_everyone()
    if is_main:
        write_spec(out, spec)

    shards = shard_ranges(len(samples), args.shard_size)
    mine = shard_indices(len(shards), accelerator.process_index, accelerator.num_processes)
    todo = {k: shards[k] for k in mine if not shard_path(out, k).is_file()}
    bar = progress(
        total=sum(len(r) for r in todo.values()),
        desc="extracting" if accelerator.num_processes == 1 else "extracting (main process's shards)",
        unit="clip",
        disable=args.quiet or not is_main,
        dynamic_ncols=True,
    )
    if todo:
        for k, tensors, bad in embed_shards(
            model,
            eval_dataset(samples, cfg.data, cfg.data.num_frames),
            todo,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=accelerator.device,
            dtype=DTYPES.get(accelerator.mixed_precision),
            tokenizer=tokenizer,
            max_length=cfg.model.text.max_length,
            on_batch=bar.update,
        ):
            write_shard(shard_path(out, k), tensors, bad)
    bar.close()
    accelerator.wait_for_everyone()
    result = {"computed_shards": len(todo), "skipped_shards": len(mine) - len(todo)}
    if is_main:
        result |= _finish(args, cfg, samples, out, len(shards))
    accelerator.wait_for_everyone()
    return result


def _finish(args, cfg, samples, out: Path, num_shards: int) -> dict:
    merged, bad = merge_shards([shard_path(out, k) for k in range(num_shards)])
    files = write_outputs(out, merged, samples, args.format)
    (out / "unreadable.txt").write_text("".join(f"{p}\n" for p in bad), encoding="utf-8")
    save_config(cfg, out / "config.yaml")
    files |= {"unreadable": str(out / "unreadable.txt"), "config": str(out / "config.yaml")}
    if args.index:
        index = build_index(merged["clip"].numpy(), ivf_threshold=args.ivf_threshold)
        require("faiss", "--index").write_index(index, str(out / INDEX_NAME))
        files["index"] = str(out / INDEX_NAME)
    counts = {
        "inputs": len(samples),
        "clips": len(merged["clip"]),
        "unreadable": len(bad),
        "texts": len(merged["text"]),
        "shards": num_shards,
    }
    info = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "args": vars(args),
        "counts": counts,
        "shapes": {k: list(merged[k].shape) for k in ("clip", "frames", "text")},
        "files": files,
    }
    (out / "extract.json").write_text(json.dumps(info, indent=2))
    print(
        f"{counts['clips']} of {counts['inputs']} clips embedded ({counts['texts']} captions) -> {out}; "
        f"{counts['unreadable']} unreadable" + (f", listed in {files['unreadable']}" if bad else "")
    )
    return counts | {"files": files}


if __name__ == "__main__":
    run_tool(main)
