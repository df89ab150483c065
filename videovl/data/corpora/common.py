"""What the synthetic corpora share: the corpus record, two-phase trajectories, glyph rendering and the
deterministic h264 writer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

__all__ = ["DIRECTIONS", "DemoCorpus", "trajectory", "render_glyphs", "write_video"]

SPLITS = ("train", "val", "test")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy); y grows down


@dataclass(frozen=True)
class DemoCorpus:
    """Where a generated corpus lies: its manifests (video and image, train/val/test), class names, counts."""

    root: Path
    video_train: Path
    video_val: Path
    video_test: Path
    image_train: Path
    image_val: Path
    image_test: Path
    classes_file: Path
    class_names: tuple[str, ...]
    counts: dict[str, int]  # samples per manifest: {"video_train": 1200, ...}

    @classmethod
    def at(cls, root: Path, counts: dict[str, int], class_names: tuple[str, ...]) -> DemoCorpus:
        paths = {f"{m}_{s}": root / f"{m}_{s}.jsonl" for m in ("video", "image") for s in SPLITS}
        return cls(root, **paths, classes_file=root / "classes.txt", class_names=class_names, counts=counts)


def trajectory(motion: str, num_frames: int, speed: float) -> np.ndarray:
    """(T, 2) offsets (x, y) from the first frame: ``speed`` pixels a step, first phase then second.

    Each of the T - 1 steps belongs to the first phase with weight 1, ..., 1, (0.5,) 0, ..., 0; the weights
    are symmetric, so ``trajectory(m)[::-1] - trajectory(m)[-1] == trajectory(reverse_class(m))``.
    """
    a, b = motion.split(" then ")
    k = np.arange(num_frames - 1)
    w = np.clip((num_frames - 2) / 2 - k + 0.5, 0.0, 1.0)[:, None]
    steps = speed * (w * np.array(DIRECTIONS[a]) + (1 - w) * np.array(DIRECTIONS[b]))
    return np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def render_glyphs(glyphs: np.ndarray, colours: np.ndarray, positions: np.ndarray, canvas: int) -> np.ndarray:
    """glyphs (n, h, w), colours (n, 3), positions (T, n, 2) top-left (x, y) -> (T, H, W, 3) uint8 frames."""
    frames = np.zeros((len(positions), canvas, canvas, 3))
    for frame, where in zip(frames, positions.astype(int), strict=True):
        for glyph, rgb, (x, y) in zip(glyphs, colours, where, strict=True):  # overlaps keep the max
            patch = frame[y : y + glyph.shape[0], x : x + glyph.shape[1]]
            np.maximum(patch, glyph[..., None] * rgb, out=patch)
    return np.rint(frames * 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        # Same frames -> same bytes needs one thread and no macroblock tree: on clips this small, x264's
        # mbtree output varies with what the process encoded before.
        stream.options = {"crf": "15", "threads": "1", "x264-params": "mbtree=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
