"""Which frames of a video make a clip.

All functions work on a half-open frame window ``[first, last)`` and return int64 frame indices inside it.
Randomness comes only from the numpy ``Generator`` passed in, so a seeded generator gives the same clip.
Windows shorter than the clip repeat frames (segment sampling) or the last frame (dense sampling).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SAMPLINGS",
    "frame_window",
    "segment_indices",
    "dense_indices",
    "sample_indices",
    "multi_view_indices",
]

SAMPLINGS = ("segment", "dense")


def frame_window(
    num_frames: int, fps: float, start: float | None = None, end: float | None = None
) -> tuple[int, int]:
    """Frames ``[first, last)`` covering ``start``..``end`` seconds, clamped to the video, never empty.

    A window past the end of the video (annotation and file disagree) shrinks to the last frame.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    first = 0 if start is None or fps <= 0 else math.floor(start * fps)
    last = num_frames if end is None or fps <= 0 else math.ceil(end * fps)
    first = min(max(first, 0), num_frames - 1)
    last = min(max(last, first + 1), num_frames)
    return first, last


def _check(first: int, last: int, num_frames: int) -> None:
    if last <= first:
        raise ValueError(f"empty frame window [{first}, {last})")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def segment_indices(
    first: int,
    last: int,
    num_frames: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    offset: float = 0.5,
) -> np.ndarray:
    """TSN sampling: split the window into ``num_frames`` equal segments and take one frame from each,
    at a random position when training and at ``offset`` (0..1, the centre by default) otherwise."""
    _check(first, last, num_frames)
    if train:
        offsets = (rng if rng is not None else np.random.default_rng()).random(num_frames)
    else:
        offsets = np.full(num_frames, offset)
    length = last - first
    idx = first + np.floor((np.arange(num_frames) + offsets) * length / num_frames).astype(np.int64)
    return np.clip(idx, first, last - 1)


def dense_indices(
    first: int,
    last: int,
    num_frames: int,
    stride: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    where: float = 0.5,
) -> np.ndarray:
    """Every ``stride``-th frame from a start chosen at random when training and at ``where`` (0..1, the
    centre by default) of the free range otherwise; past the window the last frame repeats."""
    _check(first, last, num_frames)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    slack = max(0, (last - first) - ((num_frames - 1) * stride + 1))  # start positions beyond the first
    if train:
        begin = first + int((rng if rng is not None else np.random.default_rng()).integers(slack + 1))
    else:
        begin = first + int(round(slack * where))
    return np.minimum(begin + np.arange(num_frames, dtype=np.int64) * stride, last - 1)


def sample_indices(
    first: int,
    last: int,
    num_frames: int,
    *,
    sampling: str = "segment",
    train: bool,
    rng: np.random.Generator | None = None,
    stride: int = 4,
) -> np.ndarray:
    """One clip by name of the ``sampling`` scheme ("segment" or "dense")."""
    if sampling == "segment":
        return segment_indices(first, last, num_frames, train=train, rng=rng)
    if sampling == "dense":
        return dense_indices(first, last, num_frames, stride, train=train, rng=rng)
    raise ValueError(f"sampling={sampling!r} is not one of {SAMPLINGS}")


def multi_view_indices(
    first: int, last: int, num_frames: int, num_views: int, *, sampling: str = "segment", stride: int = 4
) -> np.ndarray:
    """``num_views`` deterministic test clips spread over the window: (V, T) indices.

    Segment views take frames at offsets (v + 0.5) / V inside every segment, so each view covers the
    whole window; dense views start at evenly spaced points of the free range.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    where = (np.arange(num_views) + 0.5) / num_views
    if sampling == "segment":
        views = [segment_indices(first, last, num_frames, train=False, offset=w) for w in where]
    elif sampling == "dense":
        views = [dense_indices(first, last, num_frames, stride, train=False, where=w) for w in where]
    else:
        raise ValueError(f"sampling={sampling!r} is not one of {SAMPLINGS}")
    return np.stack(views)
