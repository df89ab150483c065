"""Manifest storage at scale: load time and resident memory, objects against flat arrays.

python benchmarks/bench_manifest.py                      # 1,000,000 lines in a temporary folder
python benchmarks/bench_manifest.py --lines 200000 --workers 2

Writes a WebVid-like manifest (a video path, one caption, an id; a clip window on every fourth line),
then measures each storage in a fresh process, so allocator state and imports do not carry over:

- ``objects``: :func:`~videovl.data.sources.read_manifest_objects`, a list of ``Sample`` (the old storage);
- ``table``: :func:`~videovl.data.sources.read_manifest` without its cache (pyarrow parse into arrays);
- ``table, cached``: the same from the cache file written by a first read (memory-mapped: pages are
  resident only once touched, and are shared with every process that maps the file).

For each: seconds to load, and resident memory the load added to the process (libraries are imported
before the baseline). Then a DataLoader with ``--workers`` workers makes one full pass over every index
(each item builds the sample record, as ``ClipDataset`` does); each worker reports its resident (RSS) and
private (USS: pages no other process shares) memory at its first item and after its last. Forked workers
share the parent's pages until they write to them; Python objects are written to on every access (their
reference counts), so with ``objects`` every page a worker reads becomes its own copy
(pytorch/pytorch#13246), while array pages are only read. Targets: ``table`` loads >= 4x faster and adds
>= 4x less memory than ``objects``, and worker USS does not grow over the pass.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from videovl.data.sources import read_manifest, read_manifest_objects

STORAGES = ("objects", "table", "table, cached")
WORDS = (
    "a",
    "man",
    "woman",
    "child",
    "dog",
    "cat",
    "runs",
    "walks",
    "jumps",
    "on",
    "the",
    "beach",
    "street",
    "in",
    "park",
    "with",
    "ball",
    "red",
    "blue",
    "green",
    "playing",
    "guitar",
    "cooking",
    "kitchen",
    "car",
    "drives",
    "road",
    "sunset",
    "slow",
    "motion",
    "aerial",
    "view",
    "of",
    "city",
    "at",
    "night",
)


def write_manifest(path: Path, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            row = {
                "video": f"videos/{i // 1000:05d}/{i:010d}.mp4",
                "caption": " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))),
                "id": f"{i:010d}",
            }
            if i % 4 == 0:
                row["start"] = round(rng.uniform(0, 20), 2)
                row["end"] = row["start"] + 5.0
            f.write(json.dumps(row) + "\n")


def _memory(pid: int | None = None) -> tuple[float, float]:
    """(RSS, USS) in MB."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss / 1e6, info.uss / 1e6


class _Records(Dataset):
    """Item ``i`` is built from sample ``i`` (its path and captions read, as a dataset would)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> int:
        sample = self.samples[i]
        return len(sample.path) + len(sample.captions)


def _measure_batch(batch: list[int]) -> tuple[int, float, float]:
    return (torch.utils.data.get_worker_info().id, *_memory())


def _batches(n: int, workers: int, size: int):
    """A one-index batch per worker first (its starting memory), then every index in order."""
    yield from ([i] for i in range(workers))
    yield from (list(range(s, min(s + size, n))) for s in range(0, n, size))


def measure(storage: str, manifest: Path, workers: int, batch: int) -> dict:
    """One storage in this process: load, then one pass over all indices in ``workers`` workers."""
    rss0 = psutil.Process().memory_info().rss
    import pyarrow.compute  # noqa: F401  (libraries load before the baseline; their cost is printed apart)
    import pyarrow.json  # noqa: F401

    pyarrow_mb = (psutil.Process().memory_info().rss - rss0) / 1e6
    rss0 = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if storage == "objects":
        samples = read_manifest_objects(manifest)
    else:
        samples = read_manifest(manifest, cache=storage == "table, cached")
    seconds = time.perf_counter() - start
    added = (psutil.Process().memory_info().rss - rss0) / 1e6
    loader = DataLoader(
        _Records(samples),
        batch_sampler=list(_batches(len(samples), workers, batch)),
        num_workers=workers,
        collate_fn=_measure_batch,
    )
    first: dict[int, tuple[float, float]] = {}
    last: dict[int, tuple[float, float]] = {}
    for worker, rss, uss in loader:
        first.setdefault(worker, (rss, uss))
        last[worker] = (rss, uss)
    return {
        "load_s": seconds,
        "added_mb": added,
        "pyarrow_mb": pyarrow_mb,
        "workers": {w: (first[w], last[w]) for w in sorted(first)},
    }


def main(argv=None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=1_000_000, help="manifest lines (default 1,000,000)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the pass (default 2)")
    p.add_argument("--batch", type=int, default=20000, help="indices per batch in the pass (default 20000)")
    p.add_argument("--dir", help="folder for the manifest and its cache (default: a temporary one)")
    p.add_argument("--measure", nargs=2, metavar=("STORAGE", "MANIFEST"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:  # the child process: print one JSON line
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.workers, args.batch)))
        return {}

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        manifest = Path(folder) / "manifest.jsonl"
        start = time.perf_counter()
        write_manifest(manifest, args.lines)
        size = manifest.stat().st_size / 1e6
        print(f"{args.lines} lines, {size:.0f} MB written in {time.perf_counter() - start:.1f} s")
        read_manifest(manifest, cache=True)  # writes the cache the third storage reads
        results = {}
        for storage in STORAGES:
            cmd = [sys.executable, __file__, "--measure", storage, str(manifest)]
            cmd += ["--workers", str(args.workers), "--batch", str(args.batch)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[storage] = json.loads(out.strip().splitlines()[-1])

    print(
        f"\n{'storage':<15} {'load s':>7} {'+RSS MB':>8}   workers after a pass: RSS / USS MB, first -> last"
    )
    for storage, r in results.items():
        workers = "; ".join(
            f"{rss0:.0f}->{rss1:.0f} / {uss0:.0f}->{uss1:.0f}"
            for (rss0, uss0), (rss1, uss1) in r["workers"].values()
        )
        print(f"{storage:<15} {r['load_s']:>7.2f} {r['added_mb']:>8.0f}   {workers}")
    print(f"(importing pyarrow added {results['table']['pyarrow_mb']:.0f} MB once, before the baselines)")
    old, new = results["objects"], results["table"]
    print(f"\nload: objects / table = {old['load_s'] / new['load_s']:.1f}x (target >= 4)")
    print(
        f"memory added: objects / table = {old['added_mb'] / max(new['added_mb'], 1e-9):.1f}x (target >= 4)"
    )
    for storage, r in results.items():
        growth = max(uss1 - uss0 for (_, uss0), (_, uss1) in r["workers"].values())
        print(f"largest worker USS growth over the pass, {storage}: {growth:.0f} MB")
    return results


if __name__ == "__main__":
    main()
