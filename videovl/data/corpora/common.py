"""What the synthetic corpora share: the corpus record, two-phase motions (trajectories, time-reversal and
order partners), glyph rendering, the deterministic h264 writer, and the cached build (``build_corpus``:
keyed by the parameters, built beside root and renamed into place, never over a folder that is not its own).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

__all__ = ["DIRECTIONS", "DemoCorpus", "trajectory", "reverse_class", "order_partner", "render_glyphs",
           "write_video", "look_image", "corpus_key", "build_corpus"]  # fmt: skip

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy); y grows down
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


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


def reverse_class(motion: str) -> str:
    """The class a clip of ``motion`` becomes when played backwards: (a then b) -> (-b then -a)."""
    a, b = motion.split(" then ")
    return f"{_OPPOSITE[b]} then {_OPPOSITE[a]}"


def order_partner(motion: str) -> str:
    """The class whose caption names the same two directions in the other order."""
    a, b = motion.split(" then ")
    return f"{b} then {a}"


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


def corpus_key(params: Mapping[str, Any]) -> str:
    """The cache key of a corpus: a hash of its generation parameters (JSON data)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _cached(root: Path, marker: str, key: str, class_names: tuple[str, ...]) -> DemoCorpus | None:
    try:
        found = json.loads((root / marker).read_text())
    except (OSError, ValueError):
        return None
    if found.get("key") != key or not all((root / f"{m}.jsonl").is_file() for m in found["counts"]):
        return None
    return DemoCorpus.at(root, found["counts"], class_names)


def build_corpus(
    root: str | Path,
    write: Callable[[Path], dict[str, int]],
    *,
    caller: str,
    marker: str,
    params: Mapping[str, Any],
    class_names: tuple[str, ...],
    force: bool = False,
    key: str | None = None,
) -> DemoCorpus:
    """Return the corpus cached at ``root`` under ``marker``, or build it with ``write(folder) -> counts``.

    The cache key is ``key`` (default: ``corpus_key(params)``), so a corpus is rebuilt whenever a parameter
    changes. The corpus is written beside ``root`` and renamed into place, so an interrupted run never
    leaves a half corpus at ``root``; the marker (key, params, counts, seconds) is written last. ``root`` is
    replaced only when it holds nothing but names a corpus writes: never a folder of someone else's files.
    ``caller`` names the generator in the error and the log line.
    """
    key = corpus_key(params) if key is None else key
    root = Path(os.path.realpath(root))  # a symlinked root: build beside and replace its target, not the link
    if not force and (corpus := _cached(root, marker, key, class_names)) is not None:
        return corpus
    ours = lambda name: (
        name in {"videos", "images", "classes.txt", marker} or name.startswith(("video_", "image_", "qa_"))
    )
    if root.parent == root or root.exists() and not (root.is_dir() and all(map(ours, os.listdir(root)))):
        raise FileExistsError(
            f"{caller}: {root} is neither a new or empty folder nor an earlier corpus of this kind; point "
            "root at a folder of its own (the generator replaces only its own files)"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, old = root.with_name(f".{root.name}.tmp-{tag}"), root.with_name(f".{root.name}.old-{tag}")
    try:
        tmp.mkdir()
        started = time.perf_counter()
        counts = write(tmp)
        seconds = round(time.perf_counter() - started, 2)
        found = {"key": key, "params": dict(params), "counts": counts, "seconds": seconds}
        (tmp / marker).write_text(json.dumps(found, indent=1) + "\n")  # written last: it means complete
        if root.exists():
            if not force and _cached(root, marker, key, class_names) is not None:  # another process won
                return DemoCorpus.at(root, counts, class_names)
            root.rename(old)
        try:
            tmp.rename(root)
        except OSError:
            if _cached(root, marker, key, class_names) is None:  # lost a race to one that left something else
                raise
        log.info("%s: wrote %s in %.1f s (%s)", caller, root, seconds, counts)
    finally:
        for leftover in (tmp, old):  # our own scratch folder and the corpus we replaced
            if leftover.exists():
                shutil.rmtree(leftover)
    return DemoCorpus.at(root, counts, class_names)


def look_image(
    out: Path, split: str, i: int, frame: np.ndarray, colour: str, shape: str, templates, rng, train: bool
) -> dict[str, Any]:
    """Save image ``i`` of ``split`` (a coloured shape) as png and return its manifest row: every caption
    template in an order drawn from ``rng`` for training, the first template for val/test."""
    rel = f"images/{split}/{i:06d}.png"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(out / rel)
    caps = [t.format(c=colour, s=shape) for t in templates]
    caption = [caps[t] for t in rng.permutation(len(caps))] if train else caps[0]
    return {"image": rel, "caption": caption, "label": f"{colour} {shape}", "id": f"{split}/{i:06d}"}
