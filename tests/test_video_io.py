import pickle

import av
import numpy as np
import pytest
from conftest import write_test_video
from PIL import Image

from videovl.data.media.video_io import VideoReadError, load_clip, probe, read_frames, read_image


def decode_all(path) -> np.ndarray:
    """Reference: every frame, decoded in order with PyAV, no seeking."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def frame_ids(clip: np.ndarray, reference: np.ndarray) -> list[int]:
    """Which reference frame each clip frame is (exact match)."""
    ids = []
    for frame in clip:
        hits = [k for k, ref in enumerate(reference) if np.array_equal(frame, ref)]
        assert hits, "a decoded frame matches no frame of the sequential decode"
        ids.append(hits[0])
    return ids


@pytest.fixture(scope="module")
def open_gop_video(tmp_path_factory):
    opts = {"g": "12", "bf": "3", "x264-params": "open-gop=1:keyint=12:min-keyint=12:scenecut=0"}
    return write_test_video(tmp_path_factory.mktemp("og") / "open_gop.mp4", num_frames=48, options=opts)


def test_probe_matches_between_backends(test_video):
    for backend in ("decord", "av", "auto"):
        info = probe(test_video, backend)
        assert (info.num_frames, info.fps, info.duration) == (40, 25.0, 1.6)


@pytest.mark.parametrize("backend", ["decord", "av", "auto"])
def test_frames_equal_sequential_decode(test_video, backend):
    reference = decode_all(test_video)
    rng = np.random.default_rng(0)
    for indices in ([0, 39], [31, 2, 2, 17], rng.choice(40, 8, replace=False), [9, 10, 11, 19, 20]):
        np.testing.assert_array_equal(read_frames(test_video, indices, backend), reference[list(indices)])


def test_backends_identical_on_shared_clips(shared_dir):
    rng = np.random.default_rng(0)
    for path in sorted((shared_dir / "videos").glob("*.mp4")):
        assert probe(path, "decord") == probe(path, "av")
        n = probe(path).num_frames
        indices = sorted({0, n - 1, *rng.choice(n, 6, replace=False).tolist()})
        dec, ref = read_frames(path, indices, "decord"), read_frames(path, indices, "av")
        assert dec.dtype == np.uint8 and dec.ndim == 4 and dec.shape[-1] == 3
        np.testing.assert_array_equal(dec, ref, err_msg=str(path))


def test_auto_is_exact_on_open_gop(open_gop_video):
    # decord numbers open-GOP keyframes by decode order and seeks a few frames off; auto must not.
    reference = decode_all(open_gop_video)
    indices = [11, 12, 13, 23, 24, 25, 36, 47]
    for _ in range(2):  # the second read takes the remembered verdict
        np.testing.assert_array_equal(read_frames(open_gop_video, indices, "auto"), reference[indices])
    np.testing.assert_array_equal(read_frames(open_gop_video, indices, "av"), reference[indices])


def _corrupt_files(tmp_path, test_video):
    data = test_video.read_bytes()
    fast = write_test_video(tmp_path / "fast.mp4", options={"movflags": "faststart"}).read_bytes()
    files = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "truncated_faststart": fast[: len(fast) // 2],
        "garbage": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    }
    for name, content in files.items():
        (tmp_path / f"{name}.mp4").write_bytes(content)
    return [tmp_path / f"{name}.mp4" for name in files] + [tmp_path / "missing.mp4"]


@pytest.mark.parametrize("backend", ["auto", "decord", "av"])
def test_unreadable_files_raise_typed_error(tmp_path, test_video, backend):
    for path in _corrupt_files(tmp_path, test_video):
        with pytest.raises(VideoReadError) as info:
            load_clip(path, num_frames=4, backend=backend)
        assert str(path) in str(info.value)
        if backend == "auto" and path.exists() and path.stat().st_size > 0:
            assert set(info.value.errors) == {"decord", "av"}  # every backend's error is named


def test_error_pickles_and_bad_arguments(test_video):
    err = pickle.loads(pickle.dumps(VideoReadError("x.mp4", {"av": "boom"})))
    assert err.path == "x.mp4" and err.errors == {"av": "boom"} and "boom" in str(err)
    with pytest.raises(IndexError, match=r"\[0, 40\)"):
        read_frames(test_video, [0, 40])
    with pytest.raises(ValueError, match="backend"):
        read_frames(test_video, [0], backend="opencv")


def test_images_are_one_frame_clips(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for ext in ("png", "bmp"):
        Image.fromarray(pixels).save(tmp_path / f"a.{ext}")
        np.testing.assert_array_equal(read_image(tmp_path / f"a.{ext}"), pixels[None])
        clip = load_clip(tmp_path / f"a.{ext}", num_frames=8, train=True)
        assert clip.shape == (1, 20, 30, 3)
    Image.fromarray(pixels).convert("L").save(tmp_path / "gray.jpg")
    assert read_image(tmp_path / "gray.jpg").shape == (1, 20, 30, 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(VideoReadError, match="bad.jpg"):
        load_clip(tmp_path / "bad.jpg", num_frames=1)


def test_clip_window_in_seconds(test_video):
    reference = decode_all(test_video)
    # 0.4 s .. 0.8 s at 25 fps = frames 10 .. 19
    clip = load_clip(test_video, num_frames=5, start=0.4, end=0.8)
    assert frame_ids(clip, reference) == [11, 13, 15, 17, 19]
    rng = np.random.default_rng(0)
    for _ in range(5):
        ids = frame_ids(
            load_clip(test_video, num_frames=5, train=True, rng=rng, start=0.4, end=0.8), reference
        )
        assert all(10 <= k < 20 for k in ids) and ids == sorted(ids)
    # a window past the end of the file clamps to the last frame instead of failing
    assert frame_ids(load_clip(test_video, num_frames=2, start=5.0, end=6.0), reference) == [39, 39]


def test_short_video_repeats_frames(tmp_path):
    path = write_test_video(tmp_path / "short.mp4", num_frames=3)
    reference = decode_all(path)
    assert len(reference) == 3
    for sampling in ("segment", "dense"):
        for train in (False, True):
            clip = load_clip(path, num_frames=8, train=train, sampling=sampling, rng=np.random.default_rng(1))
            ids = frame_ids(clip, reference)
            assert clip.shape == (8, 48, 64, 3) and ids == sorted(ids) and set(ids) <= {0, 1, 2}


def test_multi_view_and_seeded_clips(test_video):
    reference = decode_all(test_video)
    views = [frame_ids(load_clip(test_video, num_frames=4, num_views=3, view=v), reference) for v in range(3)]
    assert len({tuple(v) for v in views}) == 3 and all(0 <= k < 40 for v in views for k in v)
    a = load_clip(
        test_video, num_frames=6, train=True, rng=np.random.default_rng(7), sampling="dense", stride=2
    )
    b = load_clip(
        test_video, num_frames=6, train=True, rng=np.random.default_rng(7), sampling="dense", stride=2
    )
    np.testing.assert_array_equal(a, b)
    ids = frame_ids(a, reference)
    assert np.diff(ids).tolist() == [2] * 5


@pytest.mark.parametrize("backend", ["decord", "av", "auto"])
def test_bytes_decode_like_the_path(test_video, backend):
    data = test_video.read_bytes()
    assert probe(data, backend) == probe(test_video, backend)
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    from_path = load_clip(test_video, num_frames=4, train=True, rng=rng(), backend=backend)
    from_bytes = load_clip(data, num_frames=4, train=True, rng=rng(), backend=backend)
    np.testing.assert_array_equal(from_path, from_bytes)


def test_bytes_errors_name_the_member_and_images_need_their_modality(test_video, tmp_path):
    data = test_video.read_bytes()
    with pytest.raises(VideoReadError, match=r"s\.tar#k\.mp4") as e:
        load_clip(data[: len(data) // 2], num_frames=4, name="s.tar#k.mp4")
    assert set(e.value.errors) == {"decord", "av"}
    with pytest.raises(VideoReadError, match="empty"):
        load_clip(b"", num_frames=4, name="s.tar#k.mp4")
    Image.fromarray(np.full((6, 5, 3), 9, np.uint8)).save(tmp_path / "a.png")
    png = (tmp_path / "a.png").read_bytes()
    np.testing.assert_array_equal(
        load_clip(png, num_frames=4, modality="image"), read_image(tmp_path / "a.png")
    )
    with pytest.raises(VideoReadError, match="s.tar#k.png"):
        read_image(png[:20], name="s.tar#k.png")
