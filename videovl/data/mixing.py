"""Mixed image/video training: whole-modality batches in an order every process agrees on.

Each step's modality is a pure function of ``(seed, step)``, so all processes pick the same one without
communicating; a distributed run never has one rank in the video tower while another waits in the image
tower.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["MODALITIES", "modality_order", "MixedBatches"]

MODALITIES = ("video", "image")


def modality_order(step: int, video_ratio: float, seed: int) -> str:
    """ "video" with probability ``video_ratio``, else "image", drawn from ``(seed, step)`` alone."""
    if not 0.0 <= video_ratio <= 1.0:
        raise ValueError(f"video_ratio must be in [0, 1], got {video_ratio}")
    return "video" if np.random.default_rng([seed, step]).random() < video_ratio else "image"


class MixedBatches:
    """Yields ``(modality, batch)`` forever, the modality of step ``s`` from :func:`modality_order`.

    ``loaders`` maps "video" and/or "image" to iterables of batches (DataLoaders); with one modality,
    every step is that modality. Training loaders never end (their samplers are indexed by step); a
    finite one starts over. ``start_step`` resumes the order (not the loaders' positions: build them
    resumed, e.g. with a step-indexed sampler).
    """

    def __init__(self, loaders: dict[str, Iterable], video_ratio: float, seed: int, start_step: int = 0):
        unknown = set(loaders) - set(MODALITIES)
        if not loaders or unknown:
            raise ValueError(f"loaders must be keyed by {MODALITIES}, got {sorted(loaders)}")
        if len(loaders) == 2 and not 0.0 <= video_ratio <= 1.0:
            raise ValueError(f"video_ratio must be in [0, 1], got {video_ratio}")
        self.loaders, self.video_ratio, self.seed, self.start_step = loaders, video_ratio, seed, start_step

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        iterators = {m: iter(loader) for m, loader in self.loaders.items()}
        only = next(iter(self.loaders)) if len(self.loaders) == 1 else None
        step = self.start_step
        while True:
            modality = only or modality_order(step, self.video_ratio, self.seed)
            try:
                batch = next(iterators[modality])
            except StopIteration:
                iterators[modality] = iter(self.loaders[modality])
                try:
                    batch = next(iterators[modality])
                except StopIteration:
                    raise RuntimeError(f"the {modality} loader yields no batches") from None
            yield modality, batch
            step += 1
