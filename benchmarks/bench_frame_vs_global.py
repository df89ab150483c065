"""Does frame-level matching reach a given retrieval recall sooner than global matching?

    python benchmarks/bench_frame_vs_global.py [--seeds 0 1] [--steps 240] [--eval-every 20] [--output-dir D]
    python benchmarks/bench_frame_vs_global.py --quick          # seconds-long check that it all works

For each seed, runs the demo's earlier recipe (``configs/demo_omnivl.yaml``; ``tools/pretrain.py``, one
subprocess each, same seed, same steps) twice:
  global  the frame-level loss off in the joint stage (``stages.1.losses.frame=0``); recall from global
          clip-sentence similarity (``val/video/t2v/R@1``),
  frame   the frame-level loss on (``--frame-weight``); recall from frame-level similarity
          (``val/video/frame/t2v/R@1``),
with validation every ``--eval-every`` steps. It reads validation text-to-video R@1 from each run's
TensorBoard events and prints R@1 against steps for both, then the first step at which each run reaches
the target recall (default: the global run's final R@1) and the ratio; then each seed's final R@1 and
steps, and the spread over seeds. The claim under test: frame-level matching gets there about 4x sooner.
Steps count from the start of the run; the image stage before the joint stage is the same in both runs,
so the ratio is taken over joint-stage steps.
Extra ``section.key=value`` arguments go to both runs. A run whose ``model/`` folder is already written is
read, not retrained, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from videovl.config import load_config
from videovl.data.corpora.demo import generate_demo

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo_omnivl.yaml"  # the demo recipe with images and the frame loss
GLOBAL_R1, FRAME_R1 = "val/video/t2v/R@1", "val/video/frame/t2v/R@1"
Curve = list[tuple[int, float]]  # (step, R@1) pairs
COLUMNS = ("global", "frame", "frame/global")  # the last: the frame run's recall by global similarity


def quick_overrides(out: Path) -> list[str]:
    """A test-size model on a small corpus of our own (the default corpus takes minutes to render)."""
    root = generate_demo(out / "demo", train_videos=64, eval_videos=16, train_images=64).root
    return [
        "model.name=test", "data.demo=false", f"data.demo_root={root}", "data.num_workers=0",
        "data.batch_size=8", "eval.batch_size=16", "stages.0.steps=2", "stages.0.warmup_steps=1",
        "stages.1.warmup_steps=1",
    ]  # fmt: skip


def train(name: str, out: Path, overrides: list[str], config: str | None) -> dict[str, Curve]:
    """One pretraining run in a subprocess; returns each validation R@1 curve as (step, value) pairs. A run
    whose ``model/`` folder is already written (by an earlier, interrupted invocation) is read, not rerun."""
    if (out / "model" / "config.yaml").is_file():
        print(f"[{name}] reusing the finished run in {out}", flush=True)
        return read_curves(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "tools" / "pretrain.py"), *(["--config", config] if config else [])]
    cmd += ["--metrics-out", str(out / "metrics.json"), *overrides]
    print(f"[{name}] {' '.join(cmd[1:])}  (log: {out / 'log.txt'})", flush=True)
    with open(out / "log.txt", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (out / "log.txt").read_text().splitlines()[-20:]
        raise RuntimeError(f"run '{name}' failed with exit code {done.returncode}:\n" + "\n".join(tail))
    return read_curves(out)


def read_curves(out: Path) -> dict[str, Curve]:
    curves: dict[str, dict[int, float]] = {}
    events = sorted(out.rglob("events.out.tfevents.*"))
    if not events:
        raise FileNotFoundError(f"no TensorBoard events under {out}: was train.tracker set to null?")
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("val/video/") and tag.endswith("t2v/R@1"):
                curves.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return {tag: sorted(points.items()) for tag, points in curves.items()}


def first_step(curve: Curve, target: float, after: int) -> int | None:
    return next((s for s, v in curve if s > after and v >= target), None)


def report(curves: dict[str, Curve], target: float, stage0: int) -> dict:
    steps = sorted({s for c in curves.values() for s, _ in c})
    lookup = {name: dict(c) for name, c in curves.items()}
    print(f"\ntext-to-video R@1 (%) on the validation split; the joint stage starts after step {stage0}")
    print(f"{'step':>6} {'joint':>6}  {'global':>8}  {'frame':>8}  {'frame run, global sim':>22}")
    for s in steps:
        cells = [f"{lookup[n][s]:.1f}" if s in lookup[n] else "-" for n in COLUMNS]
        print(f"{s:>6} {max(0, s - stage0):>6}  {cells[0]:>8}  {cells[1]:>8}  {cells[2]:>22}")
    reached = {name: first_step(curves[name], target, stage0) for name in ("global", "frame")}
    print(f"\ntarget R@1 {target:.1f}: first reached (joint-stage step)")
    for name, s in reached.items():
        print(f"  {name:<7} {'never' if s is None else s - stage0}")
    ratio = None
    if all(reached.values()):
        ratio = (reached["global"] - stage0) / (reached["frame"] - stage0)
        print(f"  frame-level matching got there {ratio:.2f}x sooner (the claim: about 4x)")
    return {"target": target, "reached": reached, "ratio": ratio}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="pretraining config (default: configs/demo_omnivl.yaml)")
    p.add_argument("--steps", type=int, help="joint-stage steps of each run (default: the config's)")
    p.add_argument("--eval-every", type=int, default=20, help="validate every this many steps")
    p.add_argument("--frame-weight", type=float, default=0.5, help="frame-level loss weight of the frame run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one pair of runs per seed")
    p.add_argument("--target", type=float, help="R@1 to reach (default: the global run's final R@1)")
    p.add_argument("--output-dir", default="runs/bench_frame_vs_global")
    p.add_argument("--quick", action="store_true", help="test-size model, tiny corpus, 6 joint steps")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for both runs")
    a = p.parse_args(argv)
    out = Path(a.output_dir).resolve()
    common = quick_overrides(out) if a.quick else []
    steps = a.steps or (6 if a.quick else None)
    eval_every = 2 if a.quick and a.eval_every == p.get_default("eval_every") else a.eval_every
    common += [
        f"train.eval_every={eval_every}",
        "train.tracker=tensorboard",
        "train.save_every=0",
        "data.test_manifest=null",
        # stages after the joint one (the demo's alignment stage) change neither tower: left out
        *(f"stages.{i}.steps=0" for i in range(2, len(load_config(a.config or DEMO_CONFIG).stages))),
        *([f"stages.1.steps={steps}"] if steps else []),
        *a.overrides,
    ]
    runs = {"global": ["stages.1.losses.frame=0"], "frame": [f"stages.1.losses.frame={a.frame_weight}"]}
    results = {}
    for seed in a.seeds:
        print(f"\n=== seed {seed}", flush=True)
        folder = out / f"seed{seed}"
        raw = {
            name: train(
                f"{name}, seed {seed}",
                folder / name,
                [*common, *extra, f"train.seed={seed}", f"train.output_dir={folder / name}"],
                a.config,
            )
            for name, extra in runs.items()
        }
        missing = [(n, t) for n, t in (("global", GLOBAL_R1), ("frame", FRAME_R1)) if t not in raw[n]]
        if missing:
            found = {n: list(c) for n, c in raw.items()}
            raise KeyError(f"no validation curve for {missing}; found {found}")
        curves = {"global": raw["global"][GLOBAL_R1], "frame": raw["frame"][FRAME_R1]}
        curves["frame/global"] = raw["frame"][GLOBAL_R1]
        stage0 = load_config(folder / "global" / "config.yaml").stages[0].steps
        target = a.target if a.target is not None else curves["global"][-1][1]
        results[seed] = {"curves": curves, "stage0": stage0, **report(curves, target, stage0)}
    summarise(results)
    (out / "result.json").write_text(json.dumps(results, indent=1))
    return results


def summarise(results: dict[int, dict]) -> None:
    """Per seed: final R@1 of each run, joint-stage steps to the target, ratio; then mean and spread."""
    print("\nover seeds (final validation t2v R@1; joint-stage steps to the global run's final R@1)")
    heads = [("seed", 5), ("global R@1", 11), ("frame R@1", 10), ("global steps", 13), ("frame steps", 12)]
    print(" ".join(f"{h:>{w}}" for h, w in [*heads, ("ratio", 7)]))
    finals = {"global": [], "frame": []}
    for seed, r in results.items():
        steps = {n: (None if s is None else s - r["stage0"]) for n, s in r["reached"].items()}
        for name in finals:
            finals[name].append(r["curves"][name][-1][1])
        cells = [f"{steps[n]}" if steps[n] is not None else "never" for n in ("global", "frame")]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(
            f"{seed:>5} {finals['global'][-1]:>11.1f} {finals['frame'][-1]:>10.1f} {cells[0]:>13} "
            f"{cells[1]:>12} {ratio:>7}"
        )
    for name, values in finals.items():
        spread = max(values) - min(values)
        print(f"final {name} R@1: mean {sum(values) / len(values):.1f}, spread (max - min) {spread:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
