"""One media input of any kind -> the model's pixels: the preprocessing of the public API.

:class:`ClipPreprocessor` takes what a user has at hand (a video or image path, a video's bytes, decoded
uint8 frames, a PIL image), picks the clip's frames as the datasets do (``load_clip``'s sampling; decoded
frames go through the same sampling, so a path, its bytes and its frames give the same clip) and applies a
:class:`~videovl.data.media.transforms.ClipTransform`. The result is one clip (C, T, H, W), or (C, 1, H, W)
for an image: stack several for a batch.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from videovl.data.media.sampling import SAMPLINGS, frame_window, sample_indices
from videovl.data.media.transforms import ClipTransform
from videovl.data.media.video_io import BACKENDS, load_clip

__all__ = ["ClipPreprocessor", "frames_of"]

INPUT_KINDS = "a video or image path, a video's bytes, uint8 frames (T, H, W, 3) or (H, W, 3), or a PIL image"


def frames_of(media: Any) -> np.ndarray | None:
    """``media`` as uint8 frames (T, H, W, 3) when it is already decoded (an array, a tensor, a PIL image);
    None when it is a path or bytes, which the decoder reads. One frame, (H, W, 3) or (1, H, W, 3), is an
    image: it stays one frame, as an image file does."""
    if isinstance(media, (str, os.PathLike, bytes, bytearray, memoryview)):
        return None
    if hasattr(media, "convert") and hasattr(media, "size"):  # a PIL image: duck-typed, Pillow stays lazy
        return np.asarray(media.convert("RGB"))[None]
    if isinstance(media, (np.ndarray, Tensor)):
        frames = media.detach().cpu().numpy() if isinstance(media, Tensor) else media
        if frames.ndim == 3:
            frames = frames[None]  # one image
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise ValueError(
                f"media is a {type(media).__name__} of {frames.dtype} {tuple(media.shape)}; decoded frames "
                "must be uint8 RGB (T, H, W, 3), or (H, W, 3) for an image"
            )
        return frames
    raise TypeError(f"media is a {type(media).__name__}; expected {INPUT_KINDS}")


class ClipPreprocessor:
    """Callable ``(media, rng=None, start=None, end=None) -> (C, T, H, W)`` float tensor.

    ``transform`` makes the pixels (its ``train`` flag also picks random rather than centre frames of each
    segment); ``num_frames``, ``sampling``, ``stride`` and ``backend`` pick and decode the frames as a
    dataset does. ``rng`` drives a training preprocessor's frame offsets and crop (a fresh unseeded one if
    omitted); ``start``/``end`` (seconds) restrict a video path or bytes to a window. ``modality="image"``
    reads bytes as an image (a path's suffix decides by itself).
    """

    def __init__(
        self,
        transform: ClipTransform,
        num_frames: int,
        *,
        sampling: str = "segment",
        stride: int = 4,
        backend: str = "auto",
    ):
        if sampling not in SAMPLINGS or backend not in BACKENDS:
            raise ValueError(
                f"sampling={sampling!r}, backend={backend!r}: expected one of {SAMPLINGS}, {BACKENDS}"
            )
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.transform, self.num_frames = transform, num_frames
        self.sampling, self.stride, self.backend = sampling, stride, backend

    @property
    def train(self) -> bool:
        return self.transform.train

    def __call__(
        self,
        media: Any,
        rng: np.random.Generator | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        modality: str | None = None,
    ) -> Tensor:
        if self.train and rng is None:
            rng = np.random.default_rng()
        frames = frames_of(media)
        if frames is None:
            frames = load_clip(
                media,
                num_frames=self.num_frames,
                train=self.train,
                rng=rng,
                start=start,
                end=end,
                backend=self.backend,
                sampling=self.sampling,
                stride=self.stride,
                modality=modality,
            )
        elif frames.shape[0] > 1:  # decoded video: the frames the decoder would have picked
            if start is not None or end is not None:
                raise ValueError("start/end (seconds) apply to a video path or bytes, not to decoded frames")
            first, last = frame_window(frames.shape[0], 0.0)
            indices = sample_indices(
                first,
                last,
                self.num_frames,
                sampling=self.sampling,
                train=self.train,
                rng=rng,
                stride=self.stride,
            )
            frames = frames[indices]
        if not frames.flags.writeable:  # a PIL image's array, or the caller's read-only one
            frames = frames.copy()
        return self.transform(torch.from_numpy(frames), rng=rng)

    def __repr__(self) -> str:
        return (
            f"ClipPreprocessor({self.transform!r}, num_frames={self.num_frames}, sampling={self.sampling!r}, "
            f"backend={self.backend!r})"
        )
