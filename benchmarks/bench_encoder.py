"""Training-step cost of the videovl visual encoder next to the encoders a user would otherwise reach for.

    python benchmarks/bench_encoder.py [--width 384 --depth 4 --heads 6 --frames 8 --size 112 --batch 4]

At one size, on one input and with the same thread count, it times forward + backward of
  (a) videovl    ``VisualEncoder`` with divided space-time attention,
  (b) timesformer ``transformers.TimesformerModel`` (random init, ``attention_type="divided_space_time"``),
  (c) timm-frames ``timm`` ViT run on the B*T frames as images: space only, a lower bound for (a),
each with and without gradient checkpointing, and prints the table and the ratios (b)/(a) and (a)/(c).

Time: the median of ``--repeats`` steps after ``--warmup`` steps; the configurations take turns step by
step, so load from other processes on a shared machine falls on all of them alike.
Peak memory: each configuration runs alone in a fresh subprocess, which reports the growth of its
resident-set high-water mark (``ru_maxrss``) over two training steps, measured from after the model and
input were built: activations, gradients and allocator slack, but not weights or the input. The CPU
allocator has no peak counter of its own, and a shared process would hide later peaks behind earlier ones.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

MODELS = ("videovl", "timesformer", "timm-frames")


def build(
    name: str, a: argparse.Namespace, checkpointing: bool
) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """The model and a closure running one forward pass on the shared input, in that model's layout."""
    torch.manual_seed(0)
    video = torch.randn(a.batch, 3, a.frames, a.size, a.size)  # (B, C, T, H, W), the same for every model
    if name == "videovl":
        from videovl.config import VisionConfig
        from videovl.models.visual import VisualEncoder

        cfg = VisionConfig(
            image_size=a.size, patch_size=a.patch, num_frames=a.frames, width=a.width, depth=a.depth,
            heads=a.heads, attention="divided",
        )  # fmt: skip
        model = VisualEncoder(cfg)
        model.set_grad_checkpointing(checkpointing)
        return model, lambda: model.forward_features(video)
    if name == "timesformer":
        from transformers import TimesformerConfig, TimesformerModel

        cfg = TimesformerConfig(
            image_size=a.size, patch_size=a.patch, num_frames=a.frames, hidden_size=a.width,
            num_hidden_layers=a.depth, num_attention_heads=a.heads, intermediate_size=4 * a.width,
            attention_type="divided_space_time",
        )  # fmt: skip
        model = TimesformerModel(cfg)
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        frames_first = video.transpose(1, 2).contiguous()  # (B, T, C, H, W)
        return model, lambda: model(pixel_values=frames_first).last_hidden_state
    if name == "timm-frames":
        import timm

        model = timm.create_model(
            "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=a.size, patch_size=a.patch,
            embed_dim=a.width, depth=a.depth, num_heads=a.heads,
        )  # fmt: skip
        model.set_grad_checkpointing(checkpointing)
        images = video.transpose(1, 2).flatten(0, 1).contiguous()  # (B*T, C, H, W)
        return model, lambda: model.forward_features(images)
    raise ValueError(f"unknown model '{name}'; expected one of {MODELS}")


def step(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    forward().float().square().mean().backward()
    return time.perf_counter() - start


def gflops(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """Floating-point operations of one step (matmuls and convolutions, recomputation included): the
    arithmetic floor under the measured times, free of the machine's noise."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(model, forward)
    return counter.get_total_flops() / 1e9


def peak_memory_mb(name: str, a: argparse.Namespace, checkpointing: bool) -> float:
    """Run in a fresh process (see the module docstring): KiB of ``ru_maxrss`` growth, as MiB."""
    model, forward = build(name, a, checkpointing)
    model.train()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        step(model, forward)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory subprocesses")
    p.add_argument(
        "--memory-of", nargs=2, metavar=("MODEL", "CKPT"), help=argparse.SUPPRESS
    )  # subprocess mode
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    if a.memory_of:
        print(json.dumps(peak_memory_mb(a.memory_of[0], a, a.memory_of[1] == "1")))
        return {}
    configs = [(name, ckpt) for name in MODELS for ckpt in (False, True)]
    built = {c: build(c[0], a, c[1]) for c in configs}
    times: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    for i in range(a.warmup + a.repeats):
        for c, (model, forward) in built.items():
            t = step(model, forward)
            if i >= a.warmup:
                times[c].append(t)
    ms = {c: 1e3 * statistics.median(v) for c, v in times.items()}
    flops = {c: gflops(*built[c]) for c in configs}
    mem: dict[tuple[str, bool], float] = {}
    if not a.no_memory:
        forwarded = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--no-memory"]
        for name, ckpt in configs:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                *forwarded,
                "--memory-of",
                name,
                str(int(ckpt)),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            mem[(name, ckpt)] = float(out.strip().splitlines()[-1])

    print(
        f"width {a.width}, depth {a.depth}, heads {a.heads}, {a.frames} frames of {a.size} px, "
        f"patch {a.patch}, batch {a.batch}, {a.threads} threads; "
        f"median of {a.repeats} steps after {a.warmup} warm-up"
    )
    print(f"{'model':<13} {'grad ckpt':<9} {'fwd+bwd ms':>10} {'spread ms':>11} {'GFLOP':>6} {'peak MiB':>9}")
    for c in configs:
        spread = f"{1e3 * min(times[c]):.0f}-{1e3 * max(times[c]):.0f}"
        peak = f"{mem[c]:.0f}" if c in mem else "-"
        print(
            f"{c[0]:<13} {'on' if c[1] else 'off':<9} {ms[c]:>10.1f} {spread:>11} {flops[c]:>6.2f} {peak:>9}"
        )
    results = {
        "ms": {f"{n}{'+ckpt' if k else ''}": v for (n, k), v in ms.items()},
        "gflop": {f"{n}{'+ckpt' if k else ''}": v for (n, k), v in flops.items()},
    }
    for ckpt in (False, True):
        tag = " (grad ckpt)" if ckpt else ""
        b_over_a = ms[("timesformer", ckpt)] / ms[("videovl", ckpt)]
        a_over_c = ms[("videovl", ckpt)] / ms[("timm-frames", ckpt)]
        fb, fc = (
            flops[("timesformer", ckpt)] / flops[("videovl", ckpt)],
            flops[("videovl", ckpt)] / flops[("timm-frames", ckpt)],
        )
        print(f"timesformer / videovl{tag}: {b_over_a:.2f}x time, {fb:.2f}x FLOPs (target >= 1.30)")
        print(f"videovl / timm-frames{tag}: {a_over_c:.2f}x time, {fc:.2f}x FLOPs (target <= 1.25)")
        results[f"timesformer/videovl{tag}"], results[f"videovl/timm-frames{tag}"] = b_over_a, a_over_c
    if mem:
        results["peak_mib"] = {f"{n}{'+ckpt' if k else ''}": v for (n, k), v in mem.items()}
    return results


if __name__ == "__main__":
    main()
