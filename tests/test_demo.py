"""The moving-digits demo corpus: real files, deterministic, cached, and motion that matches the captions."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videovl.data.annotations.msrvtt_qa import read_msrvtt_qa
from videovl.data.corpora.demo import (
    DIGIT_WORDS,
    MOTION_CLASSES,
    QA_ANSWERS,
    generate_demo,
    main,
    qa_files,
    reverse_class,
    trajectory,
)
from videovl.data.sources import read_manifest

# 80 single-digit clips then 8 digit pairs in val and test: every caption kind, still fast.
SMALL = dict(train_videos=32, eval_videos=88, train_images=20)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
CAPTION = re.compile(r"the digits? (\d)(?: and (\d))? moves? (\w+), then (\w+)$")
ORDER = re.compile(r"(?:does|do) the digits? move (\w+) before (?:it|they) moves? (\w+)\?$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo") / "digits", seed=0, **SMALL)


def manifests(corpus):
    return {name: read_manifest(getattr(corpus, name)) for name in corpus.counts}


def decode(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def centroids(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> (T, 2) brightness centroid (x, y) per frame."""
    ink = frames.astype(float).sum(-1)
    ys, xs = np.mgrid[: ink.shape[1], : ink.shape[2]]
    total = ink.sum((1, 2))
    return np.stack([(ink * xs).sum((1, 2)) / total, (ink * ys).sum((1, 2)) / total], axis=1)


def assert_moves(frames: np.ndarray, motion: str, where: str) -> None:
    """First half of the clip moves along the first direction, second half along the second, nothing else."""
    c, half = centroids(frames), len(frames) // 2
    for (a, b), direction in zip([(0, half - 1), (half, -1)], motion.split(" then "), strict=True):
        shift, unit = c[b] - c[a], np.array(DIRECTIONS[direction])
        along, across = shift @ unit, shift @ unit[::-1]
        assert along > 4 and abs(across) < 1.5, f"{where}: {direction} phase moved {shift} (want {unit})"


def test_manifests_parse_and_files_decode(corpus):
    found = manifests(corpus)
    assert {k: len(v) for k, v in found.items()} == corpus.counts
    assert corpus.counts == {"video_train": 32, "video_val": 88, "video_test": 88, "image_train": 20,
                             "image_val": 10, "image_test": 10}  # fmt: skip
    for sample in found["video_test"] + found["video_train"][:4]:
        frames = decode(sample.path)
        assert frames.shape == (16, 32, 32, 3), sample.path
        assert frames.max() > 100, f"{sample.path} is blank"
    for sample in found["image_test"] + found["image_train"][:4]:
        image = np.asarray(Image.open(sample.path).convert("RGB"))
        assert image.shape == (32, 32, 3) and image.max() > 100
    with av.open(found["video_val"][0].path) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    for split in ("train", "val", "test"):
        assert all(s.path.startswith(str(corpus.root / "videos" / split)) for s in found[f"video_{split}"])


def test_classes_and_reverse_pairs(corpus):
    assert corpus.classes_file.read_text().splitlines() == list(MOTION_CLASSES) == list(corpus.class_names)
    assert len(set(MOTION_CLASSES)) == 8
    for i, name in enumerate(MOTION_CLASSES):
        first, second = name.split(" then ")
        assert np.dot(DIRECTIONS[first], DIRECTIONS[second]) == 0, f"{name}: phases are not perpendicular"
        assert reverse_class(name) == MOTION_CLASSES[i ^ 1] and reverse_class(reverse_class(name)) == name
    for split, samples in manifests(corpus).items():
        if split.startswith("video"):
            assert Counter(s.label for s in samples).keys() == set(MOTION_CLASSES), split
            assert all(MOTION_CLASSES[s.extra["class_id"]] == s.label for s in samples)


@pytest.mark.parametrize("num_frames", [15, 16])
def test_reversed_trajectory_is_partner_class(num_frames):
    for name in MOTION_CLASSES:
        path = trajectory(name, num_frames, speed=1.7)
        np.testing.assert_allclose(path[::-1] - path[-1], trajectory(reverse_class(name), num_frames, 1.7))


def test_captions_match_labels_and_digits(corpus):
    found = manifests(corpus)
    for split in ("train", "val", "test"):
        for s in found[f"video_{split}"]:
            assert len(s.captions) == (3 if split == "train" else 1), s.id
            for caption in s.captions:  # every paraphrase names the digits and both directions in order
                words = [w for w in re.findall(r"\w+", caption) if w in DIRECTIONS]
                named = [int(d) for d in re.findall(r"\d", caption)] or [
                    DIGIT_WORDS.index(w) for w in re.findall(r"\w+", caption) if w in DIGIT_WORDS
                ]
                assert words == s.label.split(" then ") and named == s.extra["digits"], (s.id, caption)
            if split != "train":
                digits = [int(d) for d in CAPTION.match(s.captions[0]).groups()[:2] if d]
                assert digits == s.extra["digits"], s.captions
        for s in found[f"image_{split}"]:
            (digit,) = s.extra["digits"]
            assert s.label == DIGIT_WORDS[digit]
            assert all(DIGIT_WORDS[digit] in c or str(digit) in c for c in s.captions), s.captions


def test_eval_captions_identify_one_sample(corpus):
    found = manifests(corpus)
    for split in ("val", "test"):
        videos, images = found[f"video_{split}"], found[f"image_{split}"]
        captions = [s.captions[0] for s in videos]
        assert len(set(captions)) == len(captions), f"video_{split} repeats a caption"
        keys = [(frozenset(s.extra["digits"]), s.label) for s in videos]  # "3 and 7" is "7 and 3"
        assert len(set(keys)) == len(keys)
        assert sum(len(s.extra["digits"]) == 2 for s in videos) == 8
        assert sorted(s.label for s in images) == sorted(DIGIT_WORDS)
        assert len({s.captions[0] for s in images}) == 10


def test_splits_use_disjoint_bitmaps(corpus):
    used = {split: set() for split in ("train", "val", "test")}
    for name, samples in manifests(corpus).items():
        for s in samples:
            used[name.split("_")[1]].update(s.extra["bitmaps"])
    assert (
        not used["train"] & used["val"]
        and not used["train"] & used["test"]
        and not used["val"] & used["test"]
    )


def test_motion_follows_the_caption_and_reverses(corpus):
    singles = [s for s in read_manifest(corpus.video_test) if len(s.extra["digits"]) == 1]
    assert len(singles) == 80
    for s in singles:
        frames = decode(s.path)
        assert_moves(frames, s.label, s.id)
        # Played backwards, the clip is one of its partner class: the geometry the partner's caption states.
        assert_moves(frames[::-1], reverse_class(s.label), f"{s.id} reversed")


def test_qa_splits_follow_the_captions(corpus):
    files = qa_files(corpus.root)
    assert json.loads(files["answers"].read_text()) == list(QA_ANSWERS)
    for split in ("train", "val", "test"):
        clips = read_manifest(getattr(corpus, f"video_{split}"))
        questions, report = read_msrvtt_qa(files[split], corpus.root, answer_list=files["answers"])
        assert not report.problems and report.counts["missing_videos"] == 0, report.summary()
        singles = sum(len(c.extra["digits"]) == 1 for c in clips)
        kinds = Counter(q.qtype for q in questions)
        assert kinds == {"digit": singles, "first": len(clips), "second": len(clips), "order": 2 * len(clips)}
        assert report.counts["videos"] == len(clips) and len({q.question_id for q in questions}) == len(
            questions
        )
        by_video = {}
        for q in questions:
            by_video.setdefault(q.video, []).append(q)
        order = [q.answer for q in questions if q.qtype == "order"]
        assert order.count("yes") == order.count("no") == len(clips), split  # balanced exactly
        assert 0 < sum(q.question_id.endswith("order0") and q.answer == "yes" for q in questions) < len(clips)
        for clip in clips:
            # The caption (the first template in every split) states what the answers must be.
            caption = next(c for c in clip.captions if CAPTION.match(c))
            d1, d2, first, second = CAPTION.match(caption).groups()
            asked = {q.question_id.rsplit("/", 1)[1]: q for q in by_video[clip.path]}
            assert asked["first"].answer == first and asked["second"].answer == second, clip.id
            assert ("digit" in asked) == (d2 is None) and (d2 or asked["digit"].answer == d1)
            for name in ("order0", "order1"):
                x, y = ORDER.match(asked[name].question).groups()
                assert {x, y} == {first, second} and asked[name].answer == ("yes" if x == first else "no")
    # From the question alone the order answers of the test's single-digit clips are a coin toss: every
    # question is asked of its own class (yes) and of its order partner (no) equally often.
    singles = {c.path for c in read_manifest(corpus.video_test) if len(c.extra["digits"]) == 1}
    answers = {}
    for q in read_msrvtt_qa(files["test"])[0]:
        if q.qtype == "order" and q.video in singles:
            answers.setdefault(q.question, []).append(q.answer)
    assert all(a.count("yes") == a.count("no") for a in answers.values()) and len(answers) == 8


def test_deterministic_by_seed(corpus, tmp_path):
    again = generate_demo(tmp_path / "again", seed=0, **SMALL)
    other = generate_demo(tmp_path / "other", seed=1, **SMALL)
    files = sorted(p.relative_to(corpus.root) for p in corpus.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    # Every manifest, clip and image is byte-identical (the marker holds a timing, so it may differ).
    changed = [f for f in files if (again.root / f).read_bytes() != (corpus.root / f).read_bytes()]
    assert set(changed) <= {Path("demo.json")}  # the same timing twice is rare, not wrong
    assert other.video_test.read_bytes() != corpus.video_test.read_bytes()
    a, b = (
        decode(str(again.root / "videos/val/000001.mp4")),
        decode(str(corpus.root / "videos/val/000001.mp4")),
    )
    assert np.array_equal(a, b)
    assert not np.array_equal(decode(str(other.root / "videos/val/000001.mp4")), b)


def test_cache_force_and_safety(tmp_path):
    tiny = dict(train_videos=8, eval_videos=8, train_images=10)
    root = tmp_path / "digits"
    first = generate_demo(root, **tiny)
    marker, clip = root / "demo.json", root / "videos/test/000000.mp4"
    stamps = marker.stat().st_mtime_ns, clip.stat().st_mtime_ns
    assert generate_demo(root, **tiny) == first
    assert (marker.stat().st_mtime_ns, clip.stat().st_mtime_ns) == stamps, "a cached corpus was rewritten"
    generate_demo(root, force=True, **tiny)
    assert clip.stat().st_mtime_ns != stamps[1]
    assert generate_demo(root, **{**tiny, "train_videos": 9}).counts["video_train"] == 9  # new parameters
    # A half-written corpus (no marker) is rebuilt; nothing is left beside root.
    marker.unlink()
    (root / "video_test.jsonl").write_text("")
    assert len(read_manifest(generate_demo(root, **tiny).video_test)) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]
    # A folder holding anything else is never replaced.
    (foreign := tmp_path / "mine").mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        generate_demo(foreign, **tiny)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_more_eval_images_cycle_the_digits_and_keep_the_default_corpus_key(tmp_path):
    tiny = dict(train_videos=8, eval_videos=8, train_images=10)
    default = generate_demo(tmp_path / "default", **tiny)
    assert generate_demo(tmp_path / "default", eval_images=10, **tiny) == default  # same cache, no rebuild
    more = generate_demo(tmp_path / "more", eval_images=25, **tiny)
    images = read_manifest(more.image_test)
    assert len(images) == 25 and len(read_manifest(more.image_val)) == 25
    labels = [s.label for s in images]
    assert sorted(set(labels)) == sorted(DIGIT_WORDS) and max(labels.count(w) for w in DIGIT_WORDS) == 3
    assert all(s.captions == [f"a handwritten {s.label}"] for s in images)
    # the clips do not depend on the image count
    assert more.video_test.read_bytes() == default.video_test.read_bytes()


def test_cli(tmp_path, capsys):
    argv = ["--root", str(tmp_path / "cli"), "--seed", "3", "--train-videos", "8", "--eval-videos", "8",
            "--train-images", "10"]  # fmt: skip
    corpus = main(argv)
    out = capsys.readouterr().out
    assert "video_test.jsonl" in out and "image_train.jsonl" in out and str(corpus.root) in out
    assert corpus.counts["video_train"] == 8 and corpus.video_test.is_file()
    stamp = corpus.video_test.stat().st_mtime_ns
    main([*argv, "--force"])
    assert corpus.video_test.stat().st_mtime_ns != stamp
    with pytest.raises(ValueError, match="eval_videos"):
        generate_demo(tmp_path / "bad", eval_videos=1000)
