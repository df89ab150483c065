"""OmniVL's decoupled image-then-joint schedule against its alternatives, at equal steps and seeds.

    python benchmarks/bench_schedules.py [--seeds 0 1] [--output-dir runs/bench_schedules]
    python benchmarks/bench_schedules.py --quick          # seconds-long check that it all works

Four schedules of the demo's earlier recipe (``configs/demo_omnivl.yaml``; ``tools/pretrain.py``, one
subprocess each), all of T steps, T being the config's image + joint stage steps (the alignment stage is
left out: it changes neither tower):
  a  video         video-text only, T steps
  b  joint         images and videos together from the start (Frozen-in-Time style), T steps
  c  image-video   the image stage, then video-text only
  d  image-joint   the image stage, then images and videos together (OmniVL; configs/demo_omnivl.yaml's)
Each finished model is scored on the test split with ``tools/evaluate.py``: text-to-video R@1 (dual
encoder), zero-shot motion top-1 (prompt "the digit moves {label}", 8 classes, 4 of them pairs that
differ only by time order) and, for what the run kept of images, zero-shot digit top-1 on held-out images
(prompt "a handwritten {label}", 10 classes; the corpus is written with ``--eval-images`` test images, so
one image is not 10 points). The table gives each seed and the mean. Extra ``section.key=value``
arguments go to every run. A run whose ``model/`` folder is already written is scored, not retrained, so
an interrupted benchmark continues where it stopped (delete ``--output-dir`` to start over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench_frame_vs_global import DEMO_CONFIG, ROOT, train

from videovl.config import load_config
from videovl.data.corpora.demo import generate_demo

VIDEO_ONLY = "stages.1.sources=[{manifest: 'demo:video_train.jsonl', kind: video-text}]"
SCHEDULES = {
    "a video": lambda total: ["stages.0.steps=0", f"stages.1.steps={total}", VIDEO_ONLY],
    "b joint": lambda total: ["stages.0.steps=0", f"stages.1.steps={total}"],
    "c image-video": lambda total: [VIDEO_ONLY],
    "d image-joint": lambda total: [],
}
METRICS = {  # column: (evaluation, key in its output)
    "video t2v R@1": ("retrieval", "t2v/R@1"),
    "motion top-1": ("motion", "action/top1"),
    "order pairs": ("motion", "action/order_pair_acc"),
    "image top-1": ("image", "action/top1"),
}


def evaluate(model: Path, root: Path, out: Path) -> dict[str, float]:
    """The three test-split scores of one finished run, each from ``tools/evaluate.py``."""
    runs = {
        "retrieval": ["--task", "retrieval", "--manifest", str(root / "video_test.jsonl"), "--rerank-k", "0"],
        "motion": ["--task", "action", "--manifest", str(root / "video_test.jsonl")]
        + ["--prompt", "the digit moves {label}"],
        "image": ["--task", "action", "--manifest", str(root / "image_test.jsonl")]
        + ["--prompt", "a handwritten {label}"],
    }
    scores = {}
    for name, argv in runs.items():
        result = out / f"eval_{name}.json"
        cmd = [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--checkpoint", str(model), *argv]
        cmd += ["--num-workers", "0", "--output", str(result)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"evaluation '{name}' of {model} failed:\n{done.stderr[-2000:]}")
        scores[name] = json.loads(result.read_text())
    return {col: scores[name][key] for col, (name, key) in METRICS.items()}


def report(results: dict[str, dict[int, dict[str, float]]]) -> None:
    seeds = sorted({s for per_seed in results.values() for s in per_seed})
    print("\ntest split; each cell: " + " / ".join(f"seed {s}" for s in seeds) + " -> mean")
    print(f"{'schedule':<15}" + "".join(f"{col:>28}" for col in METRICS))
    for name, per_seed in results.items():
        cells = []
        for col in METRICS:
            values = [per_seed[s][col] for s in seeds if s in per_seed]
            cells.append(" / ".join(f"{v:.1f}" for v in values) + f" -> {statistics.mean(values):.1f}")
        print(f"{name:<15}" + "".join(f"{c:>28}" for c in cells))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="pretraining config (default: configs/demo_omnivl.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--schedules", nargs="+", choices=[n.split()[0] for n in SCHEDULES], help="default: all")
    p.add_argument("--eval-images", type=int, default=200, help="held-out test images (default: 200)")
    p.add_argument("--output-dir", default="runs/bench_schedules")
    p.add_argument("--quick", action="store_true", help="test-size model, tiny corpus, a few steps")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for every run")
    a = p.parse_args(argv)
    out = Path(a.output_dir).resolve()
    config = load_config(a.config or DEMO_CONFIG, a.overrides)
    sizes = {"train_videos": 64, "eval_videos": 16, "train_images": 64} if a.quick else {}
    root = generate_demo(out / "demo", seed=config.data.demo_seed, eval_images=a.eval_images, **sizes).root
    common = ["data.demo=false", f"data.demo_root={root}", "data.test_manifest=null", "train.save_every=0"]
    common += [f"stages.{i}.steps=0" for i in range(2, len(config.stages))]
    if a.quick:
        common += ["model.name=test", "data.num_workers=0", "data.batch_size=8", "eval.batch_size=16"]
        common += ["stages.0.steps=2", "stages.1.steps=4"]
        common += ["stages.0.warmup_steps=1", "stages.1.warmup_steps=1"]
    common += a.overrides
    resolved = load_config(a.config or DEMO_CONFIG, common)
    total = resolved.stages[0].steps + resolved.stages[1].steps
    chosen = {n: f for n, f in SCHEDULES.items() if not a.schedules or n.split()[0] in a.schedules}
    results: dict[str, dict[int, dict[str, float]]] = {}
    for seed in a.seeds:
        for name, schedule in chosen.items():
            run = out / f"{name.split()[0]}_seed{seed}"
            overrides = [*common, *schedule(total), f"train.seed={seed}", f"train.output_dir={run}"]
            train(f"{name}, seed {seed}", run, overrides, a.config)  # reuses a finished run
            results.setdefault(name, {})[seed] = evaluate(run / "model", root, run)
            print(f"[{name}, seed {seed}] {results[name][seed]}", flush=True)
    report(results)
    (out / "result.json").write_text(json.dumps({"total_steps": total, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
