"""The built-in demo corpus, "moving digits": scikit-learn's real handwritten digits as videos and images.

``generate_demo(root)`` renders the 8x8 digits of ``sklearn.datasets.load_digits`` (bundled, no download),
upscaled 2x, into h264 clips and png images, and writes in ``root``: ``video_{train,val,test}.jsonl``
(caption "the digit 3 moves left, then up", label "left then up", extra keys ``digits``, ``class_id``,
``bitmaps``), ``image_{train,val,test}.jsonl`` (caption "a handwritten seven", label "seven") and
``classes.txt`` (the 8 motion classes, line index = class id), and question-answering splits
``qa_{train,val,test}.jsonl`` with their answer list ``qa_answers.json`` (see below).

A clip shows one or two digits moving in two phases, the second perpendicular to the first. Played
backwards, a clip of "left then up" is exactly a clip of "down then right": classes ``2k`` and ``2k + 1`` are
such pairs, so only a model that reads frame order can tell them apart. Splits use disjoint digit bitmaps.
Val and test use one caption template and each caption names one video (all 80 single-digit combinations
first, then digit pairs); image val/test hold one image per digit. Train rows list every paraphrase.
Everything is deterministic by ``seed``; the corpus is built beside ``root``, renamed into place, and cached
under a marker (``demo.json``) keyed by the generation parameters.

The QA splits ask about every clip of the video split (the MSRVTT-QA layout, one JSON object a line:
``video``, ``question``, ``answer``, ``question_id``, ``type``), with one question template each:
``digit`` "which digit is shown?" (single-digit clips; answer "3"), ``first`` "which way does the digit
move first?" and ``second`` "which way does the digit move after the first move?" (left/right/up/down),
and two ``order`` questions that name the clip's two directions in both orders, "does the digit move left
before it moves up?" (yes) and "does the digit move up before it moves left?" (no): yes/no is balanced
exactly, and only the order of the two moves tells them apart. The answer list holds the 16 answers.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from itertools import combinations, cycle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from videovl.data.corpora.common import (
    DemoCorpus,
    build_corpus,
    corpus_key,
    render_glyphs,
    reverse_class,
    trajectory,
    write_video,
)
from videovl.data.sources import write_manifest
from videovl.extras import require

__all__ = ["MOTION_CLASSES", "DIGIT_WORDS", "QA_TYPES", "QA_ANSWERS", "DemoCorpus", "generate_demo",
           "reverse_class", "trajectory", "video_caption", "image_caption", "clip_questions", "qa_files",
           "main"]  # fmt: skip

# Bump when the output changes for the same parameters, so cached corpora are rebuilt (3: the QA splits).
VERSION = 3
MARKER = "demo.json"
SPLITS = ("train", "val", "test")
SCALE = 2  # 8x8 bitmaps become 16x16 glyphs
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Classes 2k and 2k + 1 are time reversals of each other.
MOTION_CLASSES = (
    "left then up", "down then right",
    "left then down", "up then right",
    "right then up", "down then left",
    "right then down", "up then left",
)  # fmt: skip
# (one digit, two digits); the first template is the only one used in val and test.
_VIDEO_TEMPLATES = (
    ("the digit {d} moves {a}, then {b}", "the digits {d} move {a}, then {b}"),
    ("a handwritten {d} goes {a} and then {b}", "handwritten {d} go {a} and then {b}"),
    ("the number {w} travels {a}, after that {b}", "the numbers {w} travel {a}, after that {b}"),
)
_IMAGE_TEMPLATES = ("a handwritten {w}", "the digit {d}", "a picture of the number {w}")
QA_TYPES = ("digit", "first", "second", "order")
QA_ANSWERS = (*(str(d) for d in range(10)), "left", "right", "up", "down", "yes", "no")


def video_caption(digits: list[int], motion: str, template: int = 0) -> str:
    a, b = motion.split(" then ")
    single, plural = _VIDEO_TEMPLATES[template]
    d = " and ".join(str(x) for x in digits)
    w = " and ".join(DIGIT_WORDS[x] for x in digits)
    return (single if len(digits) == 1 else plural).format(d=d, w=w, a=a, b=b)


def image_caption(digit: int, template: int = 0) -> str:
    return _IMAGE_TEMPLATES[template].format(d=digit, w=DIGIT_WORDS[digit])


def clip_questions(row: dict[str, Any], yes_first: bool) -> list[dict[str, Any]]:
    """The QA rows of one clip's manifest row (its ``video``, ``id``, ``digits`` and ``label``); the two
    order questions come yes first or no first as ``yes_first`` says (ids ``order0``, ``order1``)."""
    a, b = row["label"].split(" then ")
    one = len(row["digits"]) == 1
    subject, does, it, moves = (
        ("the digit", "does", "it", "moves") if one else ("the digits", "do", "they", "move")
    )
    asked = [("digit", "digit", "which digit is shown?", str(row["digits"][0]))] if one else []
    asked += [
        ("first", "first", f"which way {does} {subject} move first?", a),
        ("second", "second", f"which way {does} {subject} move after the first move?", b),
    ]
    order = [(a, b, "yes"), (b, a, "no")]
    for j, (x, y, answer) in enumerate(order if yes_first else order[::-1]):
        asked.append(("order", f"order{j}", f"{does} {subject} move {x} before {it} {moves} {y}?", answer))
    return [
        {
            "video": row["video"],
            "question": q,
            "answer": ans,
            "question_id": f"{row['id']}/{name}",
            "type": kind,
        }
        for kind, name, q, ans in asked
    ]


def qa_files(root: str | Path) -> dict[str, Path]:
    """Where a corpus at ``root`` keeps its QA splits (``train``, ``val``, ``test``) and ``answers``."""
    root = Path(root)
    return {**{s: root / f"qa_{s}.jsonl" for s in SPLITS}, "answers": root / "qa_answers.json"}


def _colours(rng: np.random.Generator, n: int, colour: bool) -> np.ndarray:
    tint = rng.uniform(0.3, 1.0, (n, 3)) if colour else np.ones((n, 3))
    return tint / tint.max(axis=1, keepdims=True) * rng.uniform(0.7, 1.0, (n, 1))


def _positions(rng: np.random.Generator, n: int, motion: str, canvas: int, num_frames: int) -> np.ndarray:
    size = 8 * SCALE
    # A second digit sits half a glyph right and half a glyph above or below the first: the pair overlaps a
    # quarter but both stay legible, and the caption can name them left to right.
    layout = np.array([[0, 0]] if n == 1 else [[0, 0], [size // 2, rng.choice([-1, 1]) * size // 2]])
    layout -= layout.min(axis=0)
    free = canvas - size - layout.max(axis=0)  # room to move on each axis
    # One speed for both phases, so a clip reversed is as likely as its partner class' clips.
    travel = rng.uniform(0.6, 1.0) * free.min()
    path = trajectory(motion, num_frames, travel / ((num_frames - 1) / 2))
    start = rng.uniform(-path.min(axis=0), free - path.max(axis=0))
    return np.rint(start + path)[:, None, :] + layout[None]  # (T, n, 2)


def _eval_specs(rng: np.random.Generator, count: int) -> list[tuple[tuple[int, ...], int]]:
    """Unique (digit set, class) pairs: all 80 single digits first (classes cycling), then digit pairs."""
    per_class = [rng.permutation(10) for _ in MOTION_CLASSES]
    singles = [((int(per_class[c][i]),), c) for i in range(10) for c in range(8)]
    pairs = [(p if rng.random() < 0.5 else p[::-1], c) for p in combinations(range(10), 2) for c in range(8)]
    return (singles + [pairs[i] for i in rng.permutation(len(pairs))])[:count]


def _train_specs(rng: np.random.Generator, count: int, two_digit: float) -> list[tuple[tuple[int, ...], int]]:
    classes = np.concatenate([rng.permutation(8) for _ in range(-(-count // 8))])[:count]
    sizes = np.where(rng.random(count) < two_digit, 2, 1)
    return [
        (tuple(rng.choice(10, n, replace=False).tolist()), int(c))
        for c, n in zip(classes, sizes, strict=True)
    ]


def _write_corpus(out: Path, p: dict[str, Any]) -> dict[str, int]:
    # Only generation needs scikit-learn (its bundled digits); reading a generated corpus does not.
    data = require("sklearn.datasets", "generating the demo corpus (moving digits)").load_digits()
    glyphs = np.kron(data.images / 16.0, np.ones((SCALE, SCALE)))  # (1797, 16, 16) in [0, 1]
    rng = np.random.default_rng([p["seed"], 0])
    pools: dict[str, dict[int, list[int]]] = {s: {} for s in SPLITS}
    for d in range(10):  # disjoint bitmaps per split, stratified by digit
        idx = rng.permutation(np.flatnonzero(data.target == d)).tolist()
        n = round(len(idx) * 0.1)
        pools["test"][d], pools["val"][d], pools["train"][d] = idx[:n], idx[n : 2 * n], idx[2 * n :]
    # Each digit's bitmaps are handed out in a (shuffled) cycle, so uses spread evenly over a split.
    pool = lambda split: {d: cycle(idx) for d, idx in pools[split].items()}

    counts, size, canvas = {}, 8 * SCALE, p["canvas"]
    for k, split in enumerate(SPLITS):
        train = split == "train"
        rng, bitmaps, rows = np.random.default_rng([p["seed"], 1, k]), pool(split), []
        if train:
            specs = _train_specs(rng, p["train_videos"], p["two_digit_fraction"])
        else:
            specs = _eval_specs(rng, p["eval_videos"])
        for i, (ds, c) in enumerate(specs):
            motion, used = MOTION_CLASSES[c], [next(bitmaps[d]) for d in ds]
            where = _positions(rng, len(ds), motion, canvas, p["num_frames"])
            frames = render_glyphs(glyphs[used], _colours(rng, len(ds), p["colour"]), where, canvas)
            rel = f"videos/{split}/{i:06d}.mp4"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_video(out / rel, frames, fps=8)
            order = rng.permutation(len(_VIDEO_TEMPLATES)) if train else [0]
            caption = [video_caption(list(ds), motion, t) for t in order]
            rows.append({"video": rel, "caption": caption if train else caption[0],
                         "label": motion, "id": f"{split}/{i:06d}", "digits": list(ds), "class_id": c,
                         "bitmaps": used})  # fmt: skip
        write_manifest(out / f"video_{split}.jsonl", rows)
        # Its own generator, so the clips and images stay those of a corpus without questions.
        yes_first = np.random.default_rng([p["seed"], 3, k]).random(len(rows)) < 0.5
        questions = [q for row, y in zip(rows, yes_first, strict=True) for q in clip_questions(row, bool(y))]
        write_manifest(out / f"qa_{split}.jsonl", questions)

        rng, bitmaps, images = np.random.default_rng([p["seed"], 2, k]), pool(split), []
        # val/test: by default one image per digit, so captions are unique (more: digits cycle, as classes)
        n = p["train_images"] if train else p["eval_images"]
        digits = np.concatenate([rng.permutation(10) for _ in range(-(-n // 10))])[:n]
        for i, d in enumerate(digits.tolist()):
            used = [next(bitmaps[d])]
            xy = np.clip((canvas - size) // 2 + rng.integers(-3, 4, 2), 0, canvas - size)  # near the centre
            frame = render_glyphs(glyphs[used], _colours(rng, 1, p["colour"]), xy[None, None], canvas)[0]
            rel = f"images/{split}/{i:06d}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(out / rel)
            order = rng.permutation(len(_IMAGE_TEMPLATES)) if train else [0]
            caption = [image_caption(d, t) for t in order]
            images.append({"image": rel, "caption": caption if train else caption[0], "label": DIGIT_WORDS[d],
                           "id": f"{split}/{i:06d}", "digits": [d], "bitmaps": used})  # fmt: skip
        write_manifest(out / f"image_{split}.jsonl", images)
        counts.update({f"video_{split}": len(rows), f"image_{split}": len(images)})

    (out / "classes.txt").write_text("".join(f"{c}\n" for c in MOTION_CLASSES))
    (out / "qa_answers.json").write_text(json.dumps(list(QA_ANSWERS)) + "\n")
    return counts


def generate_demo(
    root: str | Path,
    seed: int = 0,
    *,
    force: bool = False,
    train_videos: int = 1200,
    eval_videos: int = 120,
    train_images: int = 1500,
    eval_images: int = 10,
    two_digit_fraction: float = 0.3,
    canvas: int = 32,
    num_frames: int = 16,
    colour: bool = True,
) -> DemoCorpus:
    """Generate the moving-digits corpus in ``root`` (or return the cached one); see the module docstring.

    ``eval_videos`` clips go to val and to test each (at most 440 unique captions: 80 single digits, then
    360 pairs); 10% of each digit's bitmaps are held out for val and 10% for test. Clips play at 8 fps.
    ``eval_images`` images go to val and to test each (10: one per digit; more cycle through the digits,
    for zero-shot digit classification of images).
    """
    # Every knob below is part of the cache key, so a corpus is rebuilt whenever one of them changes.
    params = {"version": VERSION, **{k: v for k, v in locals().items() if k not in ("root", "force")}}
    # The default before the knob existed stays out of the key, so corpora written then stay valid.
    keyed = {k: v for k, v in params.items() if k != "eval_images" or v != 10}
    bad = canvas % 2 or canvas < 32 or num_frames < 4 or min(train_videos, train_images, eval_images) < 1
    if bad or not 1 <= eval_videos <= 440:
        raise ValueError(
            f"generate_demo: got canvas={canvas}, num_frames={num_frames}, eval_videos={eval_videos}, "
            f"train_videos={train_videos}, train_images={train_images}, eval_images={eval_images}; need an "
            "even canvas >= 32 (digits are 16 px), num_frames >= 4, eval_videos in 1..440 (captions stay "
            "unique), >= 1 training and evaluation image"
        )
    return build_corpus(
        root,
        functools.partial(_write_corpus, p=params),
        caller="generate_demo",
        marker=MARKER,
        params=params,
        class_names=MOTION_CLASSES,
        force=force,
        key=corpus_key(keyed),
    )


def main(argv: list[str] | None = None) -> DemoCorpus:
    parser = argparse.ArgumentParser(description="Generate the built-in moving-digits demo corpus.")
    parser.add_argument("--root", default="data/moving_digits", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching corpus exists")
    for knob in ("train_videos", "eval_videos", "train_images", "eval_images"):
        parser.add_argument(f"--{knob.replace('_', '-')}", type=int, help="default: see generate_demo")
    args = vars(parser.parse_args(argv))
    started = time.perf_counter()
    root, seed, force = args.pop("root"), args.pop("seed"), args.pop("force")
    corpus = generate_demo(root, seed, force=force, **{k: v for k, v in args.items() if v is not None})
    print(f"moving digits corpus in {corpus.root} ({time.perf_counter() - started:.1f} s)")
    for name, count in corpus.counts.items():
        print(f"  {getattr(corpus, name).name:<18} {count:>5} samples")
    print(f"  {corpus.classes_file.name:<18} {len(corpus.class_names):>5} motion classes")
    for split, path in qa_files(corpus.root).items():
        if split in SPLITS:
            questions = sum(1 for line in path.read_text().splitlines() if line.strip())
            print(f"  {path.name:<18} {questions:>5} questions")
    return corpus


if __name__ == "__main__":
    main()
