"""A second synthetic corpus, "moving shapes": coloured shapes moving in two phases, for recipe checks.

``generate_shapes(root)`` writes the same layout as the moving-digits demo (``videovl.data.corpora.demo``):
``video_{train,val,test}.jsonl`` (caption "a red circle moves left and then up", label "left then up",
extra keys ``colour``, ``shape``, ``class_id``), ``image_{train,val,test}.jsonl`` (caption "a red
circle", label "red circle") and ``classes.txt`` (the 12 motion classes, line index = class id).

The 12 classes are the ordered pairs of distinct directions, so every class has an order partner ("left
then up" and "up then left") whose captions differ only by the order of two words. A pretrained sentence
encoder barely separates those, which is what this corpus checks: a recipe that learns only appearance
gets 1/12 of zero-shot motion and half of the order pairs. Val and test hold one clip per (colour, shape,
motion), 192 unique captions; train rows list three paraphrases. Deterministic by ``seed``; cached under a
marker (``shapes.json``) keyed by the parameters. Train a demo config on it with
``data.demo=false data.demo_root=data/shapes`` (the ``demo:`` manifests then resolve here).
"""

from __future__ import annotations

import argparse
import functools
from itertools import permutations, product
from pathlib import Path
from typing import Any

import numpy as np

from videovl.data.corpora.common import (
    DemoCorpus,
    build_corpus,
    look_image,
    order_partner,
    render_glyphs,
    trajectory,
    write_video,
)
from videovl.data.sources import write_manifest

__all__ = ["SHAPE_MOTIONS", "SHAPES", "COLOURS", "order_partner", "generate_shapes", "main"]

VERSION = 1
MARKER = "shapes.json"
SPLITS = ("train", "val", "test")
SIZE = 12  # glyph side in pixels
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (1.0, 0.15, 0.1),
    "green": (0.1, 0.9, 0.2),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 0.9, 0.1),
}
SHAPE_MOTIONS = tuple(f"{a} then {b}" for a, b in permutations(("left", "right", "up", "down"), 2))
_VIDEO_TEMPLATES = (
    "a {c} {s} moves {a} and then {b}",
    "the {c} {s} goes {a}, then {b}",
    "a {s} in {c} travels {a}, after that {b}",
)
_IMAGE_TEMPLATES = ("a {c} {s}", "the {c} {s}", "a {s} in {c}")


def _glyph(shape: str) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5
    c = SIZE / 2
    masks = {
        "circle": (x - c) ** 2 + (y - c) ** 2 <= (c - 0.5) ** 2,
        "square": (np.abs(x - c) <= c - 1.5) & (np.abs(y - c) <= c - 1.5),
        "triangle": (y >= 1) & (np.abs(x - c) <= (y - 1) / 2 + 0.5),
        "cross": (np.abs(x - c) <= 2) | (np.abs(y - c) <= 2),
    }
    return masks[shape].astype(float)


def _clip(rng: np.random.Generator, shape: str, colour: str, motion: str, canvas: int, frames: int):
    free = canvas - SIZE
    travel = rng.uniform(0.6, 1.0) * free
    path = trajectory(motion, frames, travel / ((frames - 1) / 2))  # (T, 2), one speed for both phases
    start = rng.uniform(-path.min(axis=0), np.maximum(free - path.max(axis=0), -path.min(axis=0)))
    where = np.clip(np.rint(start + path), 0, free)[:, None, :]  # (T, 1, 2)
    rgb = np.array(COLOURS[colour]) * rng.uniform(0.8, 1.0)
    return render_glyphs(_glyph(shape)[None], rgb[None], where, canvas)


def _write_corpus(out: Path, p: dict[str, Any]) -> dict[str, int]:
    combos = list(product(COLOURS, SHAPES, range(len(SHAPE_MOTIONS))))  # 192 unique captions
    counts, canvas = {}, p["canvas"]
    for k, split in enumerate(SPLITS):
        train = split == "train"
        rng, rows = np.random.default_rng([p["seed"], 1, k]), []
        n = p["train_videos"] if train else p["eval_videos"]
        order = np.concatenate([rng.permutation(len(combos)) for _ in range(-(-n // len(combos)))])[:n]
        for i, j in enumerate(order.tolist()):
            colour, shape, c = combos[j]
            motion = SHAPE_MOTIONS[c]
            rel = f"videos/{split}/{i:06d}.mp4"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_video(out / rel, _clip(rng, shape, colour, motion, canvas, p["num_frames"]), fps=8)
            a, b = motion.split(" then ")
            caps = [t.format(c=colour, s=shape, a=a, b=b) for t in _VIDEO_TEMPLATES]
            caption = [caps[t] for t in rng.permutation(len(caps))] if train else caps[0]
            rows.append({"video": rel, "caption": caption, "label": motion, "id": f"{split}/{i:06d}",
                         "colour": colour, "shape": shape, "class_id": c})  # fmt: skip
        write_manifest(out / f"video_{split}.jsonl", rows)

        rng, images = np.random.default_rng([p["seed"], 2, k]), []
        looks = list(product(COLOURS, SHAPES))
        n = p["train_images"] if train else len(looks)
        for i, j in enumerate((np.arange(n) % len(looks)).tolist()):
            colour, shape = looks[j]
            xy = rng.integers(0, canvas - SIZE + 1, 2)
            rgb = np.array(COLOURS[colour]) * rng.uniform(0.8, 1.0)
            frame = render_glyphs(_glyph(shape)[None], rgb[None], xy[None, None], canvas)[0]
            images.append(look_image(out, split, i, frame, colour, shape, _IMAGE_TEMPLATES, rng, train))
        write_manifest(out / f"image_{split}.jsonl", images)
        counts.update({f"video_{split}": len(rows), f"image_{split}": len(images)})
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in SHAPE_MOTIONS))
    return counts


def generate_shapes(
    root: str | Path,
    seed: int = 0,
    *,
    force: bool = False,
    train_videos: int = 1200,
    eval_videos: int = 192,
    train_images: int = 800,
    canvas: int = 32,
    num_frames: int = 16,
) -> DemoCorpus:
    """Generate the moving-shapes corpus in ``root`` (or return the cached one); see the module docstring."""
    params = {"version": VERSION, **{k: v for k, v in locals().items() if k not in ("root", "force")}}
    if canvas % 2 or canvas < 2 * SIZE or num_frames < 4 or train_videos < 1 or train_images < 1:
        raise ValueError(
            f"generate_shapes: got canvas={canvas}, num_frames={num_frames}, train_videos={train_videos}, "
            f"train_images={train_images}; need an even canvas >= {2 * SIZE}, num_frames >= 4, >= 1 of each"
        )
    if not 1 <= eval_videos <= 192:
        raise ValueError(
            f"generate_shapes: eval_videos={eval_videos}; need 1..192 so test captions stay unique"
        )
    return build_corpus(
        root,
        functools.partial(_write_corpus, p=params),
        caller="generate_shapes",
        marker=MARKER,
        params=params,
        class_names=SHAPE_MOTIONS,
        force=force,
    )


def main(argv: list[str] | None = None) -> DemoCorpus:
    parser = argparse.ArgumentParser(description="Generate the moving-shapes check corpus.")
    parser.add_argument("--root", default="data/shapes", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching corpus exists")
    args = parser.parse_args(argv)
    corpus = generate_shapes(args.root, args.seed, force=args.force)
    print(f"moving shapes corpus in {corpus.root}: {corpus.counts}")
    return corpus


if __name__ == "__main__":
    main()
