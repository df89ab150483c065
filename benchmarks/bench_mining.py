"""Cost of the mining step (embedding excluded): each of N vectors' k nearest other vectors.

    python benchmarks/bench_mining.py [--sizes 10000 100000] [--dim 256] [--k 32] [--threads 2]
    python benchmarks/bench_mining.py --data clustered --sizes 100000

For each size it times, on the same L2-normalised vectors and thread count,
  torch       exact brute force: chunked matmul and top-k (``brute_force_neighbours``),
  faiss-flat  exact ``IndexFlatIP``: build and search (``build_index`` + ``search_neighbours``),
  faiss-ivf   ``IndexIVFFlat`` from ``--ivf-from`` rows on: k-means, add, nprobe calibration and search
              (what ``build_index`` does: exact search instead if IVF would need over 1/8 of its lists),
and prints seconds, the speed-up over torch, and recall@k against the torch result (ties aside, the exact
methods read 1.0). ``--data random`` draws i.i.d. Gaussian vectors: no neighbourhood structure, the worst
case for inverted lists. ``--data clustered`` draws them around ``--clusters`` centres, closer to what a
trained encoder produces. Each method runs once: the whole step is seconds to minutes long.
"""

from __future__ import annotations

import argparse
import sys
import time

import faiss
import numpy as np
import torch

from videovl.train.mining import brute_force_neighbours, build_index, recall_at_k, search_neighbours


def make_vectors(n: int, dim: int, data: str, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    if data == "clustered":
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        # Noise of the same norm as a centre: neighbours share a centre but are far from identical.
        x = centres[rng.integers(clusters, size=n)] + x
    return x


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run(a: argparse.Namespace) -> list[dict]:
    rows = []
    for n in a.sizes:
        x = make_vectors(n, a.dim, a.data, a.clusters)
        exact, t_torch = timed(brute_force_neighbours, x, a.k, chunk_size=a.chunk_size)
        rows.append({"n": n, "method": "torch", "seconds": t_torch, "recall": 1.0, "note": "exact"})
        variants = [("faiss-flat", n + 1)] + ([("faiss-ivf", 0)] if n >= a.ivf_from else [])
        for name, threshold in variants:
            index, t_build = timed(build_index, x, ivf_threshold=threshold, k=a.k, exact_fallback=a.fallback)
            found, t_search = timed(search_neighbours, index, x, a.k)
            note = f"build {t_build:.1f} s + search {t_search:.1f} s"
            if isinstance(index, faiss.IndexIVF):
                note += f", nlist {index.nlist}, nprobe {index.nprobe}"
            elif name == "faiss-ivf":
                note += ", fell back to exact: IVF needed over 1/8 of its lists"
            seconds = t_build + t_search
            rows.append({"n": n, "method": name, "seconds": seconds, "recall": recall_at_k(found, exact),
                         "note": note})  # fmt: skip
        for row in rows[-1 - len(variants) :]:
            row["speedup"] = t_torch / row["seconds"]
        print(format_rows(rows[-1 - len(variants) :]), flush=True)
    return rows


def format_rows(rows: list[dict]) -> str:
    return "\n".join(
        f"{r['n']:>8,}  {r['method']:<11} {r['seconds']:9.2f} s  {r['speedup']:6.2f}x  "
        f"recall {r['recall']:.3f}  ({r['note']})"
        for r in rows
    )


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--data", choices=("random", "clustered"), default="random")
    p.add_argument("--clusters", type=int, default=1000, help="centres for --data clustered")
    p.add_argument("--ivf-from", type=int, default=50_000, help="also time IVF from this many vectors on")
    p.add_argument(
        "--no-fallback", dest="fallback", action="store_false", help="keep IVF even where exact is cheaper"
    )
    p.add_argument("--chunk-size", type=int, default=1024, help="queries per torch matmul")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    print(f"{a.data} {a.dim}-d vectors, k={a.k}, {a.threads} threads, faiss {faiss.__version__}")
    print(f"{'N':>8}  {'method':<11} {'time':>11}  {'vs torch':>7}")
    return run(a)


if __name__ == "__main__":
    main(sys.argv[1:])
