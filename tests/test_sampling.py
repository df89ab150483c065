import math

import numpy as np
import pytest

from videovl.data.media.sampling import (
    dense_indices,
    frame_window,
    multi_view_indices,
    sample_indices,
    segment_indices,
)


def naive_segments(first, last, num_frames, offsets):
    """One frame per segment, written as a plain loop."""
    seg = (last - first) / num_frames
    return [min(first + int(math.floor((k + offsets[k]) * seg)), last - 1) for k in range(num_frames)]


def test_segment_eval_takes_centres():
    assert segment_indices(0, 80, 8, train=False).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert segment_indices(10, 20, 5, train=False).tolist() == [11, 13, 15, 17, 19]


def test_segment_train_matches_naive_reference_and_is_seeded():
    for first, last, t in [(0, 100, 8), (7, 30, 8), (0, 5, 8), (3, 4, 4)]:
        offsets = np.random.default_rng(1).random(t)
        got = segment_indices(first, last, t, train=True, rng=np.random.default_rng(1))
        assert got.tolist() == naive_segments(first, last, t, offsets)
        assert got.dtype == np.int64 and ((got >= first) & (got < last)).all()
    a = segment_indices(0, 1000, 8, train=True, rng=np.random.default_rng(3))
    b = segment_indices(0, 1000, 8, train=True, rng=np.random.default_rng(3))
    c = segment_indices(0, 1000, 8, train=True, rng=np.random.default_rng(4))
    assert a.tolist() == b.tolist() != c.tolist()
    # each frame stays in its own segment
    assert all(k * 125 <= i < (k + 1) * 125 for k, i in enumerate(a.tolist()))


def test_short_windows_repeat_frames():
    idx = segment_indices(0, 3, 8, train=False)
    assert len(idx) == 8 and set(idx.tolist()) == {0, 1, 2} and (np.diff(idx) >= 0).all()
    assert dense_indices(0, 5, 4, 3, train=False).tolist() == [0, 3, 4, 4]
    assert dense_indices(2, 3, 4, 2, train=True, rng=np.random.default_rng(0)).tolist() == [2, 2, 2, 2]


def test_dense_stride_and_placement():
    assert dense_indices(0, 100, 4, 5, train=False).tolist() == [42, 47, 52, 57]  # centred: slack 84
    starts = {
        int(dense_indices(0, 20, 4, 2, train=True, rng=np.random.default_rng(s))[0]) for s in range(200)
    }
    assert starts == set(range(14))  # every start 0..13 keeps the clip (span 7) inside 20 frames
    with pytest.raises(ValueError, match="stride"):
        dense_indices(0, 10, 2, 0, train=False)
    with pytest.raises(ValueError, match="sampling"):
        sample_indices(0, 10, 2, sampling="random", train=False)


def test_frame_window_from_seconds():
    assert frame_window(250, 25.0) == (0, 250)
    assert frame_window(250, 25.0, 2.0, 4.0) == (50, 100)
    assert frame_window(250, 25.0, 2.02, 3.99) == (50, 100)  # floor start, ceil end: covers the window
    assert frame_window(250, 25.0, None, 1.0) == (0, 25)
    assert frame_window(250, 25.0, 20.0, 30.0) == (249, 250)  # annotation past the end of the file
    assert frame_window(250, 25.0, -1.0, 0.0) == (0, 1)  # never empty
    with pytest.raises(ValueError):
        frame_window(0, 25.0)


@pytest.mark.parametrize("sampling", ["segment", "dense"])
def test_multi_view_shapes(sampling):
    views = multi_view_indices(0, 300, 8, 4, sampling=sampling, stride=4)
    assert views.shape == (4, 8) and ((views >= 0) & (views < 300)).all()
    assert len({tuple(v) for v in views.tolist()}) == 4
    assert (np.diff(views[:, 0]) > 0).all()  # views move forward through the video
    assert multi_view_indices(0, 300, 8, 1, sampling=sampling).tolist() == [
        sample_indices(0, 300, 8, sampling=sampling, train=False, stride=4).tolist()
    ]
