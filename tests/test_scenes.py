"""The scenes check corpus: layout, captions that name one clip, motions in partner pairs, objects where the
rows say, a background that never stands still, determinism, caching and the CLI."""

from __future__ import annotations

import re

import av
import numpy as np
import pytest
from PIL import Image

from videovl.data.corpora.common import DIRECTIONS, order_partner, reverse_class, trajectory
from videovl.data.corpora.scenes import COLOURS, SCENE_MOTIONS, generate_scenes, main, scene_tracks
from videovl.data.media.video_io import load_clip
from videovl.data.sources import read_manifest

SMALL = {"train_videos": 12, "eval_videos": 24, "train_images": 4}  # two test clips per class
TINY = {"train_videos": 3, "eval_videos": 3, "train_images": 2}
SIZE, CANVAS, FRAMES = 12, 64, 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("scenes") / "scenes", **SMALL)


def videos(corpus, split: str):
    return read_manifest(getattr(corpus, f"video_{split}"))


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_layout_and_counts(corpus):
    assert corpus.counts == {"video_train": 12, "image_train": 4, "video_val": 24, "image_val": 25,
                             "video_test": 24, "image_test": 25}  # fmt: skip
    assert corpus.classes_file.read_text().splitlines() == list(SCENE_MOTIONS) == list(corpus.class_names)
    assert len(set(SCENE_MOTIONS)) == 12
    for split in ("train", "val", "test"):
        rows = videos(corpus, split)
        assert all(r.path.startswith(str(corpus.root / "videos" / split)) for r in rows)
        assert all(len(r.captions) == (4 if split == "train" else 1) for r in rows)
        assert all(SCENE_MOTIONS[r.extra["class_id"]] == r.label for r in rows)
        images = read_manifest(getattr(corpus, f"image_{split}"))
        assert all(np.asarray(Image.open(s.path)).shape == (CANVAS, CANVAS, 3) for s in images)
    assert sorted(r.label for r in videos(corpus, "test")) == sorted(SCENE_MOTIONS * 2)  # balanced
    images = read_manifest(corpus.image_test)
    assert len({s.label for s in images}) == 25 == len({s.captions[0] for s in images})
    assert decode(videos(corpus, "val")[0].path).shape == (FRAMES, CANVAS, CANVAS, 3)


def test_the_loader_reads_a_clip(corpus):
    row = videos(corpus, "test")[0]
    clip = load_clip(row.path, num_frames=8)
    assert clip.shape == (8, CANVAS, CANVAS, 3) and clip.dtype == np.uint8
    jittered = load_clip(row.path, num_frames=8, train=True, rng=np.random.default_rng(0))
    assert jittered.shape == clip.shape


def test_captions_name_the_object_and_both_directions_in_order(corpus):
    for split in ("train", "val", "test"):
        for row in videos(corpus, split):
            for caption in row.captions:
                words = re.findall(r"\w+", caption)
                assert [w for w in words if w in DIRECTIONS] == row.label.split(" then "), caption
                assert row.extra["colour"] in words and row.extra["shape"] in words, caption
            others = {(d["colour"], d["shape"]) for d in row.extra["distractors"]}
            assert (row.extra["colour"], row.extra["shape"]) not in others, row.id  # the caption picks one
    for split in ("val", "test"):
        rows = videos(corpus, split)
        assert len({r.captions[0] for r in rows}) == len(rows), f"video_{split} repeats a caption"
        assert len({(r.extra["colour"], r.extra["shape"], r.label) for r in rows}) == len(rows)
    assert all(len(set(r.captions)) == 4 for r in videos(corpus, "train"))  # four wordings of one clip


def test_partner_classes_and_time_reversal(corpus):
    for motion in SCENE_MOTIONS:
        assert order_partner(motion) in SCENE_MOTIONS and order_partner(motion) != motion
        assert reverse_class(motion) in SCENE_MOTIONS
    for row in videos(corpus, "test"):
        # Played backwards, the target's path is one of the reverse class, from where the clip ended, at the
        # same speed: a clip reversed is a clip its partner could have drawn.
        path = np.asarray(row.extra["origin"]) + trajectory(row.label, FRAMES, row.extra["speed"])
        backwards = path[-1] + trajectory(reverse_class(row.label), FRAMES, row.extra["speed"])
        np.testing.assert_allclose(path[::-1], backwards, atol=1e-9)
        half = FRAMES // 2  # and the path moves as the label says, one phase after the other
        for (a, b), direction in zip([(0, half - 1), (half, -1)], row.label.split(" then "), strict=True):
            assert (path[b] - path[a]) @ np.array(DIRECTIONS[direction]) > 10, (row.id, row.label)


def test_objects_stay_inside_and_the_target_is_where_its_row_says(corpus):
    counts = set()
    for split in ("train", "val", "test"):
        for row in videos(corpus, split):
            tracks = scene_tracks(row.label, row.extra, FRAMES)
            counts.add(tracks.shape[1])
            assert tracks.min() >= 0 and tracks.max() <= CANVAS - SIZE, row.id
    assert counts == {1, 2, 3}, "some clips should have no distractor, some one, some two"
    for row in videos(corpus, "test")[:6]:
        frames = decode(row.path).astype(float)
        want = np.array(COLOURS[row.extra["colour"]]) * 255  # drawn last, so never hidden
        for frame, (x, y) in zip(frames, scene_tracks(row.label, row.extra, FRAMES)[:, 0], strict=True):
            centre = frame[y + 5 : y + 7, x + 5 : x + 7].mean((0, 1))
            assert np.abs(centre - want).max() < 30, (row.id, centre, want)


def test_the_background_moves_between_frames(corpus):
    row = next(r for r in videos(corpus, "test") if r.extra["distractors"])
    frames = decode(row.path).astype(float)
    free = np.ones(frames.shape[:3], dtype=bool)  # pixels no object covers
    for t, where in enumerate(scene_tracks(row.label, row.extra, FRAMES)):
        for x, y in where:
            free[t, y : y + SIZE, x : x + SIZE] = False
    change = np.abs(frames[1:] - frames[:-1]).mean(-1)  # (T - 1, H, W)
    steady = free[1:] & free[:-1]
    assert all(change[t][steady[t]].mean() > 3 for t in range(FRAMES - 1)), "a background stood still"


def test_fewer_looks_pixel_noise_and_a_still_background(tmp_path):
    # 4 colours x 3 shapes: 12 looks, so 144 test clips name every (look, motion) once; uniform pixel noise
    # that holds still (shimmer 0): only the objects change between frames.
    corpus = generate_scenes(tmp_path / "few", colours=4, shapes=3, backgrounds=("pixels",), shimmer=0.0,
                             max_distractors=0, num_frames=16, train_videos=12, eval_videos=144,
                             train_images=2)  # fmt: skip
    test = videos(corpus, "test")
    looks = {(r.extra["colour"], r.extra["shape"]) for r in test}
    assert looks == {(c, s) for c in list(COLOURS)[:4] for s in ("circle", "square", "triangle")}
    assert len({(r.extra["colour"], r.extra["shape"], r.label) for r in test}) == 144 == len(test)
    assert corpus.counts["image_test"] == 12 and {r.extra["background"] for r in test} == {"pixels"}
    row = test[0]
    frames = decode(row.path).astype(float)
    free = np.ones(frames.shape[:3], dtype=bool)
    for t, ((x, y),) in enumerate(scene_tracks(row.label, row.extra, 16)):
        free[t, max(y - 2, 0) : y + SIZE + 2, max(x - 2, 0) : x + SIZE + 2] = False  # h264 blurs edges
    steady = free[1:] & free[:-1]
    change = np.abs(frames[1:] - frames[:-1]).mean(-1)
    assert all(change[t][steady[t]].mean() < 2 for t in range(15)), "a still background moved"
    assert frames[0][free[0]].std() > 10, "pixel noise should vary across the frame"


def test_deterministic_by_seed(tmp_path):
    a = generate_scenes(tmp_path / "a", **TINY)
    b = generate_scenes(tmp_path / "b", **TINY)
    other = generate_scenes(tmp_path / "other", seed=1, **TINY)
    for name in ("video_train", "video_test", "image_train", "image_val"):
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes(), name
    clip = "videos/test/000001.mp4"
    assert np.array_equal(decode(a.root / clip), decode(b.root / clip))
    assert other.video_test.read_bytes() != a.video_test.read_bytes()
    assert not np.array_equal(decode(other.root / clip), decode(a.root / clip))


def test_cached_and_refuses_a_folder_of_other_files(tmp_path):
    first = generate_scenes(tmp_path / "scenes", **TINY)
    stamp = first.video_test.stat().st_mtime_ns
    assert generate_scenes(tmp_path / "scenes", **TINY) == first
    assert first.video_test.stat().st_mtime_ns == stamp, "a cached corpus was rewritten"
    (busy := tmp_path / "busy").mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="folder of its own"):
        generate_scenes(busy, **TINY)
    assert (busy / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "bad, field",
    [({"canvas": 48}, "canvas=48"), ({"canvas": 65}, "canvas=65"), ({"num_frames": 3}, "num_frames=3"),
     ({"eval_videos": 301}, "eval_videos=301"), ({"eval_videos": 0}, "eval_videos=0"),
     ({"train_videos": 0}, "train_videos=0"), ({"train_images": 0}, "train_images=0"),
     ({"max_distractors": 5}, "max_distractors=5"), ({"colours": 0}, "colours=0"),
     ({"shapes": 6}, "shapes=6"),
     ({"colours": 2, "shapes": 1, "eval_videos": 25}, "eval_videos=25"), ({"shimmer": -0.1}, "shimmer=-0.1"),
     ({"backgrounds": ("clouds",)}, r"backgrounds=\['clouds'\]")],
)  # fmt: skip
def test_bad_arguments_name_the_value_and_the_range(tmp_path, bad, field):
    with pytest.raises(ValueError, match=rf"{field} \(need"):
        generate_scenes(tmp_path / "bad", **{**TINY, **bad})
    assert not (tmp_path / "bad").exists()


def test_cli(tmp_path, capsys):
    argv = ["--root", str(tmp_path / "cli"), "--seed", "2", "--train-videos", "3", "--eval-videos", "3",
            "--train-images", "2"]  # fmt: skip
    corpus = main(argv)
    assert str(corpus.root) in capsys.readouterr().out
    assert corpus.counts["video_train"] == 3 and corpus.counts["video_test"] == 3
    assert len(read_manifest(corpus.video_val)) == 3
