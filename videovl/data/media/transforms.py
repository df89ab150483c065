"""Clip-consistent spatial transforms: uint8 frames (T, H, W, C) in, float pixels (C, T, H, W) out.

The whole clip goes through torchvision's functional ops as one (T, C, H, W) tensor, so every frame gets
the same crop and flip. Training: random resized crop (or resize + centre crop) and an optional
horizontal flip, off by default because flipping swaps "left" and "right" in captions. Testing: resize the
short side + centre crop, or one of three crops along the long side (``crop=0, 1, 2``) for multi-view
testing. Pixels are normalised with configurable mean/std (CLIP's by default). Randomness comes only from
the numpy Generator passed in, so a seeded item is reproducible in any worker.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from videovl.config import DataConfig

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipTransform", "build_transform", "three_crop_boxes"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def three_crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners (top, left) of three ``size`` squares along the long side: start, centre, end."""
    if min(height, width) < size:
        raise ValueError(f"three-crop of {size} needs a short side >= {size}, got {height}x{width}")
    if width >= height:
        return [((height - size) // 2, left) for left in (0, (width - size) // 2, width - size)]
    return [(top, (width - size) // 2) for top in (0, (height - size) // 2, height - size)]


class ClipTransform:
    """Callable ``(frames, rng=None, crop=None) -> (C, T, H, W)`` float tensor of side ``size``.

    ``frames``: uint8 numpy array or tensor (T, H, W, C). ``rng`` drives the random crop and flip in
    training (a fresh unseeded one if omitted). ``crop`` (0, 1 or 2) picks one of three test crops;
    ``None`` is the centre crop.
    """

    def __init__(
        self,
        size: int,
        *,
        train: bool,
        random_resized_crop: bool = True,
        scale: tuple[float, float] = (0.6, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = False,
        mean: tuple[float, ...] = CLIP_MEAN,
        std: tuple[float, ...] = CLIP_STD,
    ):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.size, self.train = size, train
        self.random_resized_crop, self.scale, self.ratio, self.hflip = (
            random_resized_crop,
            scale,
            ratio,
            hflip,
        )
        self.mean, self.std = list(mean), list(std)

    def _resize_short(self, video: Tensor) -> Tensor:
        return F.resize(video, [self.size], interpolation=InterpolationMode.BILINEAR, antialias=True)

    def __call__(
        self, frames: np.ndarray | Tensor, rng: np.random.Generator | None = None, crop: int | None = None
    ) -> Tensor:
        video = torch.as_tensor(frames)
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {video.dtype} {tuple(video.shape)}")
        video = rearrange(video, "t h w c -> t c h w")  # a channels-last view, which resize handles fast
        if self.train:
            rng = rng if rng is not None else np.random.default_rng()
            if self.random_resized_crop:
                # torchvision draws the box from the global torch RNG: seed it from ``rng`` in a fork
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(rng.integers(2**63)))
                    top, left, h, w = RandomResizedCrop.get_params(video, list(self.scale), list(self.ratio))
                video = F.resized_crop(video, top, left, h, w, [self.size, self.size], antialias=True)
            else:
                video = F.center_crop(self._resize_short(video), [self.size])
            if self.hflip and rng.random() < 0.5:
                video = F.horizontal_flip(video)
        elif crop is None:
            video = F.center_crop(self._resize_short(video), [self.size])
        else:
            video = self._resize_short(video)
            top, left = three_crop_boxes(video.shape[-2], video.shape[-1], self.size)[crop]
            video = F.crop(video, top, left, self.size, self.size)
        video = F.normalize(F.to_dtype(video, torch.float32, scale=True), self.mean, self.std)
        return rearrange(video, "t c h w -> c t h w").contiguous()

    def __repr__(self) -> str:
        mode = "train" if self.train else "test"
        return (
            f"ClipTransform({self.size}, {mode}, random_resized_crop={self.random_resized_crop}, "
            f"scale={self.scale}, hflip={self.hflip})"
        )


def build_transform(cfg: DataConfig, train: bool, image_size: int | None = None) -> ClipTransform:
    """The transform a data config describes; ``image_size`` overrides ``cfg.image_size``."""
    return ClipTransform(
        image_size or cfg.image_size,
        train=train,
        random_resized_crop=cfg.random_resized_crop,
        scale=tuple(cfg.crop_scale),
        hflip=cfg.hflip,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
    )
