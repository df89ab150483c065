"""DataLoader construction: decoding happens in worker processes.

Each worker decodes with one thread (video_io detects that it runs in a worker), memory is pinned when
CUDA is available, workers persist, and they are seeded from the loader's seeded generator (items draw
their own randomness from their keys; the seeding serves transforms that use the global generators).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

__all__ = ["build_loader", "seed_worker"]


def seed_worker(worker_id: int) -> None:
    """Seed the global numpy and ``random`` generators from this worker's torch seed (which the loader
    derives from its generator and the worker id), for transforms that use them."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(
    dataset: Dataset,
    *,
    collate_fn: Callable[[list], Any],
    batch_size: int | None = None,
    shuffle: bool = False,
    sampler: Sampler | Iterable | None = None,
    batch_sampler: Sampler | Iterable | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int = 0,
    prefetch_factor: int | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset``: give a ``batch_sampler``, or a ``batch_size`` with ``shuffle`` or a
    ``sampler``, or neither for an IterableDataset that yields whole batches (lists of items, each list
    collated). ``pin_memory`` defaults to whether CUDA is available."""
    if batch_sampler is not None and (batch_size is not None or shuffle or sampler is not None or drop_last):
        raise ValueError(
            "batch_sampler excludes batch_size, shuffle, sampler and drop_last; give one or the other"
        )
    batches = isinstance(dataset, IterableDataset) and batch_size is None and batch_sampler is None
    if batch_sampler is None and batch_size is None and not batches:
        raise ValueError("give either batch_size (with shuffle or a sampler) or a batch_sampler")
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=None if batches else batch_size if batch_sampler is None else 1,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        worker_init_fn=seed_worker if workers else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers,
        prefetch_factor=prefetch_factor if workers else None,
    )
