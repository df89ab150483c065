import numpy as np
import pytest
import torch

from videovl.config import DataConfig
from videovl.data.media.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    ClipTransform,
    build_transform,
    three_crop_boxes,
)


def noise_clip(t=4, h=40, w=60, seed=0, same=True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.stack([frame] * t) if same else rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("train", [True, False])
def test_layout_shape_and_dtype(train):
    tr = ClipTransform(32, train=train)
    out = tr(noise_clip(same=False), rng=np.random.default_rng(0))
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    assert tr(noise_clip(t=1), rng=np.random.default_rng(0)).shape == (3, 1, 32, 32)  # an image
    with pytest.raises(ValueError, match="uint8"):
        tr(noise_clip().astype(np.float32))


def test_same_crop_and_flip_for_every_frame():
    clip = noise_clip(t=6)  # identical frames: any per-frame difference would be a different crop
    tr = ClipTransform(24, train=True, scale=(0.2, 0.5), hflip=True)
    for seed in range(10):
        out = tr(clip, rng=np.random.default_rng(seed))
        for t in range(1, 6):
            torch.testing.assert_close(out[:, t], out[:, 0], rtol=0, atol=0)


def test_seeded_reproducibility():
    tr = ClipTransform(24, train=True, scale=(0.2, 0.5), hflip=True)
    clip = noise_clip(same=False)
    a, b = tr(clip, rng=np.random.default_rng(5)), tr(clip, rng=np.random.default_rng(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, tr(clip, rng=np.random.default_rng(6)))


def test_flip_is_optional_and_exact():
    clip = noise_clip(same=False)
    plain = ClipTransform(32, train=True, random_resized_crop=False)
    flips = ClipTransform(32, train=True, random_resized_crop=False, hflip=True)
    reference = ClipTransform(32, train=False)(clip)
    seen = set()
    for seed in range(12):
        torch.testing.assert_close(plain(clip, rng=np.random.default_rng(seed)), reference)  # off by default
        out = flips(clip, rng=np.random.default_rng(seed))
        flipped = torch.equal(out, reference.flip(-1))
        assert flipped or torch.equal(out, reference)
        seen.add(flipped)
    assert seen == {True, False}


def test_normalisation_and_centre_crop_against_naive():
    clip = noise_clip(h=32, w=48, same=False)  # short side already 32: no resize, only a centre crop
    out = ClipTransform(32, train=False)(clip)
    naive = clip[:, :, 8:40].astype(np.float32) / 255.0  # (T, 32, 32, 3)
    naive = (naive - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    torch.testing.assert_close(out, torch.from_numpy(naive).permute(3, 0, 1, 2), rtol=0, atol=1e-5)
    ones = ClipTransform(8, train=False, mean=(0, 0, 0), std=(1, 1, 1))(np.full((2, 8, 8, 3), 255, np.uint8))
    assert torch.all(ones == 1.0)


def test_three_crop_covers_the_long_side():
    clip = noise_clip(h=20, w=60, same=False)
    tr = ClipTransform(20, train=False, mean=(0, 0, 0), std=(1, 1, 1))
    crops = [tr(clip, crop=k) for k in range(3)]
    for k, left in enumerate((0, 20, 40)):
        naive = torch.from_numpy(clip[:, :, left : left + 20]).permute(3, 0, 1, 2).float() / 255
        torch.testing.assert_close(crops[k], naive, rtol=0, atol=1e-6)
    assert three_crop_boxes(60, 20, 20) == [(0, 0), (20, 0), (40, 0)]  # portrait: along the height
    torch.testing.assert_close(tr(clip, crop=1), tr(clip))  # the middle crop is the centre crop


def test_build_transform_reads_the_config():
    cfg = DataConfig(
        image_size=48, hflip=True, crop_scale=(0.3, 0.9), mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)
    )
    tr = build_transform(cfg, train=True)
    assert (tr.size, tr.hflip, tr.scale, tr.mean, tr.train) == (48, True, (0.3, 0.9), [0.5] * 3, True)
    assert build_transform(cfg, train=False, image_size=16)(noise_clip()).shape == (3, 4, 16, 16)
