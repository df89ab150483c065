"""A held-out check corpus, "scenes": small objects moving in two phases over textured, shimmering ground.

The demo and ``shapes`` corpora show bright glyphs on black; a recipe tuned on them can lean on that. Here
every clip is harder in the ways real video is: the object is 12 px on a 64 px frame (under a fifth of
it), the background is a per-clip texture in colour (smooth noise, stripes or a checkerboard) with fresh
smooth noise in every frame (so a frame difference does not single out the moving object), up to two
distractor objects of another colour or shape stand still or drift in a straight line (so a caption must
pick its object), and a source has 32 frames, more than a model samples (8 by default), so training sees
temporal jitter.

``generate_scenes(root)`` writes the layout of the other corpora: ``video_{train,val,test}.jsonl``
(caption "a small blue star slides up and afterwards left", label "up then left", extra keys ``colour``,
``shape``, ``class_id``, ``background``, ``origin`` and ``speed`` of the target, ``distractors``; see
``scene_tracks``), ``image_{train,val,test}.jsonl`` (one object, caption "a small blue star", label "blue
star") and ``classes.txt`` (the 12 motion classes, line index = class id).

The 12 classes are the ordered pairs of distinct directions: every class has an order partner ("up then
left") whose caption differs only by word order, and its time reversal (``reverse_class``) is a class too.
Train rows list the four caption wordings; a val or test row has one (drawn per clip), and each names one
clip: (colour, shape, motion) is unique in a split, at most 300 clips (looks x motions). Deterministic by
``seed``; cached under a marker (``scenes.json``). Train a demo config on it with ``data.demo=false
data.demo_root=data/scenes data.image_size=64``.

Variants for a second and third check: ``max_distractors=0`` and ``num_frames=16`` (one object, shorter
sources); ``backgrounds=("pixels",)`` (uniform noise, a fresh value per pixel, instead of textures);
``shimmer`` (the per-frame noise, 0: the ground holds still); ``colours`` and ``shapes`` (the first so many
of each: 4 x 3 gives 12 looks, so 144 eval clips name every (look, motion) once and appearance alone finds a
test caption's clip one time in 12).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping
from itertools import permutations, product
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from videovl.data.corpora.common import (
    DIRECTIONS,
    DemoCorpus,
    build_corpus,
    look_image,
    trajectory,
    write_video,
)
from videovl.data.sources import write_manifest

__all__ = ["SCENE_MOTIONS", "SHAPES", "COLOURS", "BACKGROUNDS", "scene_tracks", "generate_scenes", "main"]

VERSION = 1
MARKER = "scenes.json"
SPLITS = ("train", "val", "test")
SIZE = 12  # object side in pixels
SHAPES = ("circle", "square", "triangle", "star", "diamond")
COLOURS = {
    "red": (1.0, 0.15, 0.1),
    "green": (0.1, 0.9, 0.2),
    "blue": (0.2, 0.4, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "white": (1.0, 1.0, 1.0),
}
BACKGROUNDS = ("noise", "stripes", "checker", "pixels")  # pixels: uniform noise, a fresh value per pixel
SCENE_MOTIONS = tuple(f"{a} then {b}" for a, b in permutations(DIRECTIONS, 2))
SHIMMER = 0.06  # std of the per-frame noise, on [0, 1] colours
_VIDEO_TEMPLATES = (
    "a small {c} {s} slides {a} and afterwards {b}",
    "first {a}, then {b}: the {c} {s}",
    "the {c} {s} heads {a} before it turns {b}",
    "watch the {c} {s}: it drifts {a}, later {b}",
)
_IMAGE_TEMPLATES = ("a small {c} {s}", "the {s}, coloured {c}", "one {c} {s} on a patterned background")


@functools.cache
def _mask(shape: str) -> np.ndarray:
    """(SIZE, SIZE) coverage in [0, 1], drawn 4x larger and averaged down so edges blend into the texture."""
    k, c = 4, SIZE * 2  # supersampling factor, centre of the large drawing
    image = Image.new("L", (SIZE * k, SIZE * k))
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([2, 2, SIZE * k - 3, SIZE * k - 3], fill=255)
    elif shape == "square":
        draw.rectangle([6, 6, SIZE * k - 7, SIZE * k - 7], fill=255)
    elif shape == "triangle":
        draw.polygon([(c, 3), (SIZE * k - 3, SIZE * k - 5), (3, SIZE * k - 5)], fill=255)
    elif shape == "diamond":
        draw.polygon([(c, 1), (SIZE * k - 1, c), (c, SIZE * k - 1), (1, c)], fill=255)
    else:  # a five-pointed star, one point up
        angles = np.pi * (np.arange(10) / 5 - 0.5)
        radii = np.where(np.arange(10) % 2, 0.45, 1.0) * (c - 1)
        draw.polygon([(c + r * np.cos(a), c + r * np.sin(a) + 2) for a, r in zip(angles, radii)], fill=255)
    return np.asarray(image, dtype=float).reshape(SIZE, k, SIZE, k).mean((1, 3)) / 255


def _upsample(grid: np.ndarray, canvas: int) -> np.ndarray:
    """Bilinear (..., g, g, C) -> (..., canvas, canvas, C), the grid's corners on the frame's corners."""
    g = grid.shape[-2]
    u = (np.arange(canvas) + 0.5) / canvas * (g - 1)
    i = np.minimum(u.astype(int), g - 2)
    weights = np.zeros((canvas, g))
    weights[np.arange(canvas), i], weights[np.arange(canvas), i + 1] = 1 - (u - i), u - i
    channels_first = np.moveaxis(grid, -1, -3)  # (..., C, g, g): matmul, far faster than einsum here
    return np.moveaxis(weights @ channels_first @ weights.T, -3, -1)


def _texture(rng: np.random.Generator, kind: str, canvas: int) -> np.ndarray:
    """(H, W, 3) in [0.05, 0.55]: two dim colours mixed by a pattern, so the full-bright objects stand out by
    brightness, not by being the only colour."""
    y, x = np.mgrid[:canvas, :canvas] + 0.5
    if kind == "noise":
        t = _upsample(rng.random((int(rng.integers(4, 8)),) * 2 + (1,)), canvas)[..., 0]
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    elif kind == "stripes":
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(6, 16), rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
    elif kind == "pixels":
        t = rng.random((canvas, canvas))
    else:
        cell = int(rng.integers(4, 11))
        ox, oy = rng.integers(0, cell, 2)
        t = ((x + ox) // cell + (y + oy) // cell) % 2
    low, high = rng.uniform(0.05, 0.55, (2, 3))
    return low + t[..., None] * (high - low)


def _backgrounds(
    rng: np.random.Generator, kind: str, canvas: int, num_frames: int, shimmer: float = SHIMMER
) -> np.ndarray:
    """(T, H, W, 3): one texture plus ``shimmer`` times smooth noise drawn afresh for every frame (blobs
    about 8 px wide; pixel noise would cost h264 about 80 KB a clip, this about 30)."""
    fresh = _upsample(rng.normal(0, 1, (num_frames, 9, 9, 3)), canvas)
    return _texture(rng, kind, canvas)[None] + shimmer * fresh


def scene_tracks(motion: str, extra: Mapping[str, Any], num_frames: int) -> np.ndarray:
    """(T, 1 + distractors, 2) integer top-left corners (x, y) of a clip's objects, the target first.

    ``extra`` is a video row's extra keys: the target sits at ``origin + trajectory(motion, T, speed)``; a
    distractor at ``origin + t * velocity`` (velocity (0, 0): it stands still). The generator renders
    from this, so a row says exactly where its objects are.
    """
    t = np.arange(num_frames)[:, None]
    target = np.asarray(extra["origin"]) + trajectory(motion, num_frames, extra["speed"])
    others = [np.asarray(d["origin"]) + t * np.asarray(d["velocity"]) for d in extra["distractors"]]
    return np.rint(np.stack([target, *others], axis=1)).astype(int)


def _looks(p: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs in use: the first ``p["colours"]`` colours by the first ``p["shapes"]``."""
    return tuple(product(list(COLOURS)[: p["colours"]], SHAPES[: p["shapes"]]))


def _plan(rng: np.random.Generator, look: int, motion: str, p: Mapping[str, Any]) -> dict[str, Any]:
    """A clip's extra keys (see ``scene_tracks``), every object inside the frame at every step."""
    free, frames = p["canvas"] - SIZE, p["num_frames"]
    # One speed for both phases, so a clip played backwards is as likely as its partner class' clips.
    travel = rng.uniform(0.5, 0.9) * free
    speed = round(travel / ((frames - 1) / 2), 3)
    path = trajectory(motion, frames, speed)
    origin = rng.integers(
        np.ceil(-path.min(axis=0)).astype(int), np.floor(free - path.max(axis=0)).astype(int) + 1
    )
    distractors, looks = [], _looks(p)
    for _ in range(int(rng.integers(0, p["max_distractors"] + 1))):
        other = looks[(look + rng.integers(1, len(looks))) % len(looks)]  # never the target's look
        angle = rng.uniform(0, 2 * np.pi)
        velocity = np.round(rng.uniform(0.3, 0.8) * np.array([np.cos(angle), np.sin(angle)]), 3)
        if rng.random() < 0.5:  # half of them stand still
            velocity = np.zeros(2)
        shift = velocity * (frames - 1)  # a straight line stays inside if both its ends do
        low, high = np.ceil(np.maximum(0, -shift)), np.floor(np.minimum(free, free - shift))
        start = rng.integers(low.astype(int), high.astype(int) + 1)
        distractors.append(
            {"colour": other[0], "shape": other[1], "origin": start.tolist(), "velocity": velocity.tolist()}
        )
    return {"origin": origin.tolist(), "speed": speed, "distractors": distractors}


def _paint(frames: np.ndarray, looks: list[tuple[str, str]], tracks: np.ndarray) -> np.ndarray:
    """Objects over (T, H, W, 3) frames in order (the target last, so never hidden) -> uint8 frames."""
    for frame, where in zip(frames, tracks, strict=True):
        for (colour, shape), (x, y) in zip(looks, where, strict=True):
            patch, alpha = frame[y : y + SIZE, x : x + SIZE], _mask(shape)[..., None]
            patch += alpha * (np.array(COLOURS[colour]) - patch)
    return np.rint(np.clip(frames, 0, 1) * 255).astype(np.uint8)


def _video_specs(rng: np.random.Generator, n: int, train: bool, num_looks: int) -> list[tuple[int, int]]:
    """(look, class) per clip, classes cycling; val/test draw looks without repeats per class."""
    k = len(SCENE_MOTIONS)
    if train:
        classes = np.concatenate([rng.permutation(k) for _ in range(-(-n // k))])[:n]
        return [(int(rng.integers(num_looks)), int(c)) for c in classes]
    looks = [rng.permutation(num_looks) for _ in SCENE_MOTIONS]
    return [(int(looks[i % k][i // k]), i % k) for i in range(n)]


def _write_corpus(out: Path, p: dict[str, Any]) -> dict[str, int]:
    counts, canvas, frames, all_looks = {}, p["canvas"], p["num_frames"], _looks(p)
    for k, split in enumerate(SPLITS):
        train, rows = split == "train", []
        n = p["train_videos"] if train else p["eval_videos"]
        specs = _video_specs(np.random.default_rng([p["seed"], 0, k]), n, train, len(all_looks))
        for i, (look, c) in enumerate(specs):
            rng = np.random.default_rng([p["seed"], 1, k, i])  # per clip: a clip never depends on the count
            (colour, shape), motion = all_looks[look], SCENE_MOTIONS[c]
            kind = p["backgrounds"][rng.integers(len(p["backgrounds"]))]
            extra = _plan(rng, look, motion, p)
            looks = [(d["colour"], d["shape"]) for d in extra["distractors"]] + [all_looks[look]]
            tracks = np.roll(scene_tracks(motion, extra, frames), -1, axis=1)  # target last, as in looks
            rel = f"videos/{split}/{i:06d}.mp4"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            ground = _backgrounds(rng, kind, canvas, frames, p["shimmer"])
            write_video(out / rel, _paint(ground, looks, tracks), fps=8)
            a, b = motion.split(" then ")
            caps = [t.format(c=colour, s=shape, a=a, b=b) for t in _VIDEO_TEMPLATES]
            caption = (
                [caps[t] for t in rng.permutation(len(caps))] if train else caps[rng.integers(len(caps))]
            )
            row = {"video": rel, "caption": caption, "label": motion, "id": f"{split}/{i:06d}"}
            rows.append({**row, "colour": colour, "shape": shape, "class_id": c, "background": kind, **extra})
        write_manifest(out / f"video_{split}.jsonl", rows)

        images, n = [], p["train_images"] if train else len(all_looks)  # val/test: one image per look
        for i, look in enumerate((np.arange(n) % len(all_looks)).tolist()):
            rng = np.random.default_rng([p["seed"], 2, k, i])
            colour, shape = all_looks[look]
            kind = p["backgrounds"][rng.integers(len(p["backgrounds"]))]
            background = _backgrounds(rng, kind, canvas, 1, p["shimmer"])
            frame = _paint(background, [all_looks[look]], rng.integers(0, canvas - SIZE + 1, (1, 1, 2)))[0]
            images.append(look_image(out, split, i, frame, colour, shape, _IMAGE_TEMPLATES, rng, train))
        write_manifest(out / f"image_{split}.jsonl", images)
        counts.update({f"video_{split}": len(rows), f"image_{split}": len(images)})
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in SCENE_MOTIONS))
    return counts


def generate_scenes(
    root: str | Path,
    seed: int = 0,
    *,
    force: bool = False,
    train_videos: int = 1200,
    eval_videos: int = 144,
    train_images: int = 800,
    canvas: int = 64,
    num_frames: int = 32,
    max_distractors: int = 2,
    backgrounds: tuple[str, ...] = ("noise", "stripes", "checker"),
    shimmer: float = SHIMMER,
    colours: int = len(COLOURS),
    shapes: int = len(SHAPES),
) -> DemoCorpus:
    """Generate the scenes corpus in ``root`` (or return the cached one); see the module docstring.

    ``eval_videos`` clips go to val and to test each (12 per class by default), clips play at 8 fps.
    """
    params = {"version": VERSION, **{k: v for k, v in locals().items() if k not in ("root", "force")}}
    params["backgrounds"] = list(backgrounds)
    problems = []
    if not backgrounds or set(backgrounds) - set(BACKGROUNDS):
        problems.append(f"backgrounds={list(backgrounds)} (need one or more of {list(BACKGROUNDS)})")
    if not 0 <= shimmer <= 0.5:
        problems.append(f"shimmer={shimmer} (need 0..0.5, the std of the per-frame noise)")
    if canvas % 2 or canvas < 5 * SIZE:
        problems.append(f"canvas={canvas} (need an even size >= {5 * SIZE}: objects are {SIZE} px, a fifth)")
    if num_frames < 4:
        problems.append(f"num_frames={num_frames} (need >= 4: each phase at least two frames)")
    for name, count, most in (("colours", colours, len(COLOURS)), ("shapes", shapes, len(SHAPES))):
        if not 1 <= count <= most:
            problems.append(f"{name}={count} (need 1..{most})")
    if colours * shapes < 2:
        problems.append(f"colours={colours} and shapes={shapes} (need two looks or more)")
    unique = min(colours, len(COLOURS)) * min(shapes, len(SHAPES)) * len(SCENE_MOTIONS)
    if not 1 <= eval_videos <= unique:
        problems.append(f"eval_videos={eval_videos} (need 1..{unique}, so test captions stay unique)")
    for name, count in (("train_videos", train_videos), ("train_images", train_images)):
        if count < 1:
            problems.append(f"{name}={count} (need >= 1)")
    if not 0 <= max_distractors <= 4:
        problems.append(f"max_distractors={max_distractors} (need 0..4)")
    if problems:
        raise ValueError("generate_scenes: got " + "; ".join(problems))
    return build_corpus(
        root,
        functools.partial(_write_corpus, p=params),
        caller="generate_scenes",
        marker=MARKER,
        params=params,
        class_names=SCENE_MOTIONS,
        force=force,
    )


def main(argv: list[str] | None = None) -> DemoCorpus:
    parser = argparse.ArgumentParser(description="Generate the scenes check corpus (objects on textures).")
    parser.add_argument("--root", default="data/scenes", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching corpus exists")
    counts = ("train_videos", "eval_videos", "train_images", "num_frames", "max_distractors")
    for knob in (*counts, "colours", "shapes"):
        parser.add_argument(f"--{knob.replace('_', '-')}", type=int, help="default: see generate_scenes")
    parser.add_argument(
        "--backgrounds", nargs="+", choices=BACKGROUNDS, help="default: noise stripes checker"
    )
    parser.add_argument("--shimmer", type=float, help=f"per-frame noise std (default: {SHIMMER})")
    args = vars(parser.parse_args(argv))
    root, seed, force = args.pop("root"), args.pop("seed"), args.pop("force")
    if args["backgrounds"]:
        args["backgrounds"] = tuple(args["backgrounds"])
    corpus = generate_scenes(root, seed, force=force, **{k: v for k, v in args.items() if v is not None})
    print(f"scenes corpus in {corpus.root}: {corpus.counts}")
    return corpus


if __name__ == "__main__":
    main()
