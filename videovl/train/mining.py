"""Nearest-neighbour hard-negative mining (VideoCLIP's retrieval-augmented training).

Every so often the loop embeds the training set with the current model (:func:`embed_for_mining` over
:func:`mining_dataset`), finds each sample's ``k`` nearest other samples (:func:`nearest_neighbours`, a
FAISS inner-product search over L2-normalised rows: exact below ``ivf_threshold`` samples, inverted lists
above unless the embeddings are too unclustered for lists to pay) and hands the (N, k) table to
:class:`~videovl.data.samplers.NeighbourBatchSampler`, whose batches are seeds plus their neighbours, so
in-batch negatives are hard. :func:`negative_similarity` measures how hard they are.
:func:`brute_force_neighbours` is the exact torch reference for tests and benchmarks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from videovl.config import Config
from videovl.eval.embed import embed_videos
from videovl.extras import require
from videovl.train.data import StageData, build_eval_dataset

if TYPE_CHECKING:
    import faiss

__all__ = [
    "build_index",
    "search_neighbours",
    "nearest_neighbours",
    "brute_force_neighbours",
    "recall_at_k",
    "mining_dataset",
    "embed_for_mining",
    "negative_similarity",
    "sampler_negative_similarity",
]

log = logging.getLogger(__name__)

# k-means cost grows with its training points; 64 per list places coarse centroids well enough, and faiss
# warns below 39 per list, which bounds nlist for small sets.
_TRAIN_POINTS_PER_LIST = 64
_MIN_POINTS_PER_LIST = 39
# Scanning inverted lists costs about 7x more per vector than the flat index's matrix product (measured on
# 100k 256-d vectors, benchmarks/bench_mining.py), so probing more than 1/8 of the lists cannot beat it.
_MAX_PROBED_SHARE = 1 / 8


def _faiss():
    """faiss, imported on first use: mining is the only part of training that needs it (extra ``train``)."""
    return require("faiss", "hard-negative mining")


def _normalised(embeddings: np.ndarray) -> np.ndarray:
    x = np.array(embeddings, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {x.shape}")
    _faiss().normalize_L2(x)  # in place; zero rows stay zero
    return x


def build_index(
    embeddings: np.ndarray,
    *,
    ivf_threshold: int = 50_000,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = 0.95,
    k: int = 32,
    exact_fallback: bool = True,
) -> faiss.Index:
    """An inner-product index over the L2-normalised rows of ``embeddings`` (N, D).

    Below ``ivf_threshold`` rows: exact ``IndexFlatIP``. From there on: ``IndexIVFFlat`` with ``nlist``
    lists (default ~4 sqrt(N)) around k-means centroids; ``nprobe`` lists are visited per query. By default
    nprobe is the smallest power of two whose recall@``k`` on 256 sampled rows reaches ``target_recall``:
    how many lists that takes depends on how clustered the embeddings are, not on N alone. Embeddings with
    so little cluster structure that more than 1/8 of the lists must be probed get the exact index instead
    (cheaper then); ``exact_fallback=False`` keeps the IVF index anyway.
    """
    faiss = _faiss()
    x = _normalised(embeddings)
    n, d = x.shape
    if n < ivf_threshold:
        return _flat(x)
    nlist = nlist or max(1, min(round(4 * math.sqrt(n)), n // _MIN_POINTS_PER_LIST))
    # The index keeps a Python reference to its quantizer, so the quantizer lives as long as it does.
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = _TRAIN_POINTS_PER_LIST
    index.train(x)
    index.add(x)
    index.nprobe = nprobe or _calibrate_nprobe(index, x, min(k, n - 1), target_recall)
    if not nprobe and exact_fallback and index.nprobe > nlist * _MAX_PROBED_SHARE:
        log.info(
            "IVF needs %d of %d lists for recall %.2f on these %d embeddings; exact search is cheaper",
            index.nprobe, nlist, target_recall, n,
        )  # fmt: skip
        return _flat(x)
    return index


def _flat(x: np.ndarray) -> faiss.Index:
    index = _faiss().IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def _calibrate_nprobe(index: faiss.IndexIVF, x: np.ndarray, k: int, target: float, queries: int = 256) -> int:
    rng = np.random.default_rng(0)
    sample = x[rng.choice(len(x), size=min(queries, len(x)), replace=False)]
    exact = _top_k(torch.from_numpy(sample) @ torch.from_numpy(x).T, k)
    nprobe = 1
    while True:
        index.nprobe = nprobe
        if nprobe >= index.nlist or recall_at_k(index.search(sample, k)[1], exact) >= target:
            return min(nprobe, index.nlist)
        nprobe *= 2


def _top_k(scores: Tensor, k: int) -> np.ndarray:
    return scores.topk(k, dim=1).indices.numpy()


def _drop_self(ids: np.ndarray, k: int) -> np.ndarray:
    """(N, k+1) search results -> (N, k) without each row's own index, order kept, -1 padded.

    With duplicates, k+1 other rows can tie with (and outrank) a row itself; then its first k are kept.
    """
    keep = (ids != np.arange(len(ids))[:, None]) & (ids >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept entries first, in rank order
    ids, keep = np.take_along_axis(ids, order, 1), np.take_along_axis(keep, order, 1)
    return np.where(keep, ids, -1)[:, :k].astype(np.int64)


def search_neighbours(index: faiss.Index, embeddings: np.ndarray, k: int) -> np.ndarray:
    """(N, k) int64: for each row of ``embeddings`` (the rows ``index`` holds, in the same order), its ``k``
    most similar other rows, best first, -1 where fewer are found. A row never lists itself, even among
    identical rows."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = _normalised(embeddings)
    if index.ntotal != len(x):
        raise ValueError(
            f"the index holds {index.ntotal} rows but {len(x)} embeddings were given; pass the indexed rows"
        )
    _, ids = index.search(x, min(k + 1, len(x)))
    ids = np.pad(ids, ((0, 0), (0, k + 1 - ids.shape[1])), constant_values=-1)
    return _drop_self(ids, k)


def nearest_neighbours(
    embeddings: np.ndarray,
    k: int,
    *,
    ivf_threshold: int = 50_000,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = 0.95,
) -> np.ndarray:
    """(N, k) int64: each row's ``k`` most similar other rows (cosine), best first, -1 where fewer exist.

    The table :class:`~videovl.data.samplers.NeighbourBatchSampler` takes: :func:`build_index` then
    :func:`search_neighbours`.
    """
    index = build_index(
        embeddings, ivf_threshold=ivf_threshold, nlist=nlist, nprobe=nprobe, target_recall=target_recall, k=k
    )
    return search_neighbours(index, embeddings, k)


@torch.no_grad()
def brute_force_neighbours(embeddings: np.ndarray | Tensor, k: int, chunk_size: int = 1024) -> np.ndarray:
    """The exact reference for :func:`nearest_neighbours`: chunked cosine matmul and top-k in torch."""
    x = F.normalize(torch.as_tensor(embeddings, dtype=torch.float32), dim=1)
    n = len(x)
    out = np.full((n, k), -1, dtype=np.int64)
    found = min(k, n - 1)
    for start in range(0, n, chunk_size):
        scores = x[start : start + chunk_size] @ x.T  # (chunk, N)
        rows = torch.arange(len(scores))
        scores[rows, rows + start] = -math.inf  # never a row's own neighbour
        out[start : start + len(scores), :found] = _top_k(scores, found)
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact neighbours (``exact``, (N, k)) that ``found`` (N, k') also lists."""
    hits = [len(set(f[f >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum()) for f, e in zip(found, exact)]
    return float(np.mean(hits))


# --------------------------------------------------------------------------------- embedding with the model


def mining_dataset(data: StageData, cfg: Config) -> ConcatDataset:
    """The stage's training samples of one modality, in the training dataset's order (so row i is index i
    of the sampler), with the evaluation transform: one centre view per sample, no random crop."""
    return ConcatDataset(
        [build_eval_dataset(part.samples, cfg, data.num_frames) for part in data.dataset.datasets]
    )


def embed_for_mining(
    model,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> np.ndarray:
    """(N, D) float32 L2-normalised clip embeddings of every item of ``dataset``, in dataset order.

    ``model`` needs ``encode_video`` (pass the unwrapped model). Each process embeds every
    ``world_size``-th item and all processes receive every row (a collective: call it on all of them).
    Unreadable files give the embedding of a blank clip; training replaces them anyway.
    """
    was_training = model.training
    model.eval()
    try:
        out = embed_videos(
            model, dataset, frames=False, batch_size=batch_size, num_workers=num_workers, device=device,
            dtype=dtype, rank=rank, world_size=world_size,
        )  # fmt: skip
    finally:
        model.train(was_training)
    return out["clip"].numpy()


def negative_similarity(embeddings: np.ndarray | Tensor, batch: Sequence[int] | None = None) -> float:
    """Mean cosine similarity over the ordered pairs of distinct positions of a batch: how hard its
    in-batch negatives are. ``batch``: row indices into ``embeddings`` (default: all rows are the batch)."""
    x = F.normalize(torch.as_tensor(embeddings, dtype=torch.float32), dim=1)
    if batch is not None:
        x = x[torch.as_tensor(batch, dtype=torch.long)]
    b = len(x)
    if b < 2:
        raise ValueError(f"a batch needs at least 2 samples to have negatives, got {b}")
    total = x.sum(0)
    # Sum over all pairs is |sum x|^2; the diagonal holds each row's own |x|^2.
    off_diagonal = total @ total - (x * x).sum()
    return float(off_diagonal / (b * (b - 1)))


def sampler_negative_similarity(embeddings: np.ndarray | Tensor, sampler, steps: Iterable[int]) -> float:
    """Mean :func:`negative_similarity` of a batch sampler's global batches at ``steps`` (any sampler with
    ``global_batch(step)``): log it for the neighbour sampler and for the random one at each mining pass
    to see how much harder mined batches are."""
    return float(np.mean([negative_similarity(embeddings, sampler.global_batch(s)) for s in steps]))
