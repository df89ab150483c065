"""Batch samplers indexed by step, so a resumed run draws exactly the batches it would have drawn.

Every process builds the same global batch for a step (same seed) and keeps its own slice: processes get
distinct samples and the same number of batches, and no ``DistributedSampler`` state needs saving. They
yield :class:`~videovl.data.datasets.Draw` keys (row, step, position in the global batch), which seed each
item's random view, so a row drawn again is seen afresh.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from videovl.data.datasets import Draw

__all__ = ["WeightedBatchSampler", "NeighbourBatchSampler", "draws"]


def draws(global_batch: np.ndarray, step: int, rank: int, batch_size: int) -> list[Draw]:
    """This process's slice of a step's global batch of rows, as draws."""
    first = rank * batch_size
    rows = global_batch[first : first + batch_size].tolist()
    return [Draw(row, step, first + k) for k, row in enumerate(rows)]


class WeightedBatchSampler:
    """Infinite batches over several concatenated sources, mixed by weight.

    ``sizes[i]`` samples of source ``i`` occupy indices ``offset[i] .. offset[i] + sizes[i]`` of the
    concatenated dataset. Each step's batch is drawn from ``(seed, step)`` alone: each sample's source by
    weight, then samples of a source without replacement within the batch. A batch therefore depends
    on nothing but its step, which is what makes resuming exact.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
    ):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"need one weight per source, got {len(sizes)} sizes and {len(weights)} weights")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"every source needs samples, got sizes {list(sizes)}")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {list(weights)}")
        self.sizes, self.probs = list(sizes), w / w.sum()
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.start_step = seed, start_step

    def global_batch(self, step: int) -> np.ndarray:
        """The indices of the whole (all-process) batch of ``step``."""
        n = self.batch_size * self.world_size
        sources = self.batch_sources(step)
        out = np.empty(n, dtype=np.int64)
        for s in np.unique(sources):
            where = np.flatnonzero(sources == s)
            out[where] = self.offsets[s] + self._draw(int(s), step, len(where))
        return out

    def batch_sources(self, step: int) -> np.ndarray:
        """The source of each sample of the whole batch of ``step``."""
        rng = np.random.default_rng([self.seed, step])
        return rng.choice(len(self.sizes), size=self.batch_size * self.world_size, p=self.probs)

    def _draw(self, source: int, step: int, count: int) -> np.ndarray:
        size = self.sizes[source]
        rng = np.random.default_rng([self.seed, 1 + source, step])
        if count >= size:
            return rng.permutation(np.resize(np.arange(size), count))
        return rng.choice(size, size=count, replace=False)

    def __iter__(self) -> Iterator[list[Draw]]:
        step = self.start_step
        while True:
            yield draws(self.global_batch(step), step, self.rank, self.batch_size)
            step += 1


class NeighbourBatchSampler:
    """Batches built from neighbourhoods (VideoCLIP's retrieval-augmented training).

    Each global batch is a set of seed samples, each followed by ``per_seed`` samples drawn from its
    ``k`` nearest neighbours (``neighbours``: (N, k) indices into the dataset, from a FAISS search over
    the current model's embeddings), so the in-batch negatives are hard. Duplicates are replaced by
    random samples so that each sample appears once per batch.
    """

    def __init__(
        self,
        neighbours: np.ndarray,
        batch_size: int,
        per_seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
    ):
        if per_seed < 0 or per_seed >= batch_size:
            raise ValueError(f"neighbours per seed ({per_seed}) must be in [0, batch_size={batch_size})")
        self.neighbours = np.asarray(neighbours)
        self.batch_size, self.per_seed = batch_size, per_seed
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step

    def global_batch(self, step: int) -> np.ndarray:
        n_total, k = self.neighbours.shape
        n = self.batch_size * self.world_size
        rng = np.random.default_rng([self.seed, 7, step])
        chosen: list[int] = []
        seen: set[int] = set()
        while len(chosen) < n:
            seed_idx = int(rng.integers(n_total))
            group = [seed_idx]
            if self.per_seed:
                group += self.neighbours[
                    seed_idx, rng.choice(k, size=min(self.per_seed, k), replace=False)
                ].tolist()
            for i in group:
                if len(chosen) < n and i not in seen and i >= 0:
                    chosen.append(int(i))
                    seen.add(int(i))
            if len(seen) >= n_total:
                seen.clear()
        return np.asarray(chosen, dtype=np.int64)

    def __iter__(self) -> Iterator[list[Draw]]:
        step = self.start_step
        while True:
            # Neighbourhoods are consecutive, so each process's slice holds whole neighbourhoods.
            yield draws(self.global_batch(step), step, self.rank, self.batch_size)
            step += 1
