"""Training-step cost of the videovl visual encoder next to the encoders a user would otherwise reach for.

    python benchmarks/bench_encoder.py [--width 384 --depth 4 --heads 6 --frames 8 --size 112 --batch 4]

At one size, on one input and with the same thread count, it times forward + backward of
  (a) videovl    ``VisualEncoder`` with divided space-time attention,
  (b) timesformer ``transformers.TimesformerModel`` (random init, ``attention_type="divided_space_time"``),
  (c) timm-frames ``timm`` ViT run on the B*T frames as images: space only, a lower bound for (a),
each with and without gradient checkpointing, and prints the table and the ratios (b)/(a) and (a)/(c).

Time: the median of ``--repeats`` steps after ``--warmup`` steps; the configurations take turns step by
step, so load from other processes on a shared machine falls on all of them alike. Next to wall-clock
time, the process CPU time of a step (all threads) and its FLOPs: on a crowded machine wall-clock time
mostly measures waiting, and with ``--threads 1`` CPU time is the steadier comparison.
Memory, two ways. "saved MiB": the tensors autograd keeps from forward for backward (exact, in-process).
"peak MiB": each configuration runs alone in a fresh subprocess, with glibc told to return every block
of 64 KiB or more to the system on free (``MALLOC_MMAP_THRESHOLD_``), so the resident set follows live
tensors; after one warm-up step it reports how far the resident high-water mark (Linux ``VmHWM``, reset
first) rises during one training step. The CPU allocator has no peak counter of its own, and in a
shared process earlier peaks would hide later ones.
"""

from __future__ import annotations

import argparse
import json
import os
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


def step(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """One forward + backward: (wall-clock seconds, CPU seconds of this process, all threads)."""
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    forward().float().square().mean().backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def gflops(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """Floating-point operations of one step (matmuls and convolutions, recomputation included): the
    arithmetic floor under the measured times, free of the machine's noise."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(model, forward)
    return counter.get_total_flops() / 1e9


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def saved_mb(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """MiB of tensors autograd keeps from the forward pass for the backward (each storage once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(storages.values()) / 2**20


def peak_memory_mb(name: str, a: argparse.Namespace, checkpointing: bool) -> float:
    """Run in a fresh process (see the module docstring): rise of the resident high-water mark, MiB."""
    model, forward = build(name, a, checkpointing)
    model.train()
    step(model, forward)  # first-step allocations (gradients, library workspaces) become the baseline
    # Reset the resident high-water mark (VmHWM) to the current size, so it records this step's peak;
    # ru_maxrss cannot be reset, and a child inherits its parent's at fork.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    step(model, forward)
    return (_status_kib("VmHWM") - before) / 1024


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


def measure_peaks(a: argparse.Namespace, argv: list[str] | None, configs: list[tuple[str, bool]]) -> dict:
    """``peak_memory_mb`` of each configuration, each in a fresh subprocess of this script."""
    forwarded = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--no-memory"]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    peaks = {}
    for name, ckpt in configs:
        cmd = [sys.executable, str(Path(__file__).resolve()), *forwarded, "--memory-of", name, str(int(ckpt))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        peaks[(name, ckpt)] = float(out.strip().splitlines()[-1])
    return peaks


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    if a.memory_of:
        print(json.dumps(peak_memory_mb(a.memory_of[0], a, a.memory_of[1] == "1")))
        return {}
    configs = [(name, ckpt) for name in MODELS for ckpt in (False, True)]
    built = {c: build(c[0], a, c[1]) for c in configs}
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {c: [] for c in configs}
    for i in range(a.warmup + a.repeats):
        for c, (model, forward) in built.items():
            t = step(model, forward)
            if i >= a.warmup:
                times[c].append(t)
    table = {
        "ms": {c: 1e3 * statistics.median(w for w, _ in v) for c, v in times.items()},
        "cpu_ms": {c: 1e3 * statistics.median(u for _, u in v) for c, v in times.items()},
        "gflop": {c: gflops(*built[c]) for c in configs},
        "saved_mib": {c: saved_mb(*built[c]) for c in configs},
    }
    del built
    if not a.no_memory:
        table["peak_mib"] = measure_peaks(a, argv, configs)

    print(
        f"width {a.width}, depth {a.depth}, heads {a.heads}, {a.frames} frames of {a.size} px, "
        f"patch {a.patch}, batch {a.batch}, {a.threads} threads; "
        f"median of {a.repeats} steps after {a.warmup} warm-up"
    )
    head = ["model", "grad ckpt", "fwd+bwd ms", "spread ms", "CPU ms", "GFLOP", "saved MiB", "peak MiB"]
    print(f"{head[0]:<13} {head[1]:<9} " + " ".join(f"{h:>10}" for h in head[2:]))
    for c in configs:
        cells = [
            f"{table['ms'][c]:.1f}",
            f"{1e3 * min(w for w, _ in times[c]):.0f}-{1e3 * max(w for w, _ in times[c]):.0f}",
            f"{table['cpu_ms'][c]:.0f}",
            f"{table['gflop'][c]:.2f}",
            f"{table['saved_mib'][c]:.0f}",
            f"{table['peak_mib'][c]:.0f}" if "peak_mib" in table else "-",
        ]
        print(f"{c[0]:<13} {'on' if c[1] else 'off':<9} " + " ".join(f"{x:>10}" for x in cells))
    results: dict = {
        k: {f"{n}{'+ckpt' if ck else ''}": v for (n, ck), v in col.items()} for k, col in table.items()
    }
    for ckpt in (False, True):
        tag = " (grad ckpt)" if ckpt else ""
        for num, den, target in (
            ("timesformer", "videovl", ">= 1.30"),
            ("videovl", "timm-frames", "<= 1.25"),
        ):
            ratio, cpu, flop = (
                table[k][(num, ckpt)] / table[k][(den, ckpt)] for k in ("ms", "cpu_ms", "gflop")
            )
            print(
                f"{num} / {den}{tag}: {ratio:.2f}x time, {cpu:.2f}x CPU, {flop:.2f}x FLOPs (target {target})"
            )
            results[f"{num}/{den}{tag}"] = ratio
    return results


if __name__ == "__main__":
    main()
