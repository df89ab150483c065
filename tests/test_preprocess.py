"""tools/preprocess_videos.py on tiny clips: size, rate, keyframes, times, resume, bad inputs, manifest."""

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import write_test_video

from tools import preprocess_videos
from videovl.config import ConfigError
from videovl.data.sources import read_manifest

SMALL = ["--short-side", "48", "--fps", "5", "--keyframe-interval", "3", "--quiet"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "clips").mkdir()
    write_test_video(root / "clips" / "a.mp4", num_frames=50, size=(96, 128))  # 2 s at 25 fps
    write_test_video(root / "clips" / "b.mp4", num_frames=20, size=(30, 40), fps=4)  # below both targets
    (root / "clips" / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    rows = [
        {"video": "clips/a.mp4", "caption": ["one", "two"], "id": "a", "start": 0.4, "end": 1.2, "k": [1]},
        {"video": "clips/a.mp4", "caption": "again", "start": 1.0, "end": 2.0},
        {"video": "clips/b.mp4", "label": "small", "id": "b"},
        {"video": "clips/bad.mp4", "caption": "never"},
        {"image": "images/cat.png", "caption": "a cat"},
    ]
    (root / "train.jsonl").write_text("# header\n" + "".join(json.dumps(r) + "\n" for r in rows))
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _stream(path: Path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys = [p.is_keyframe for p in c.demux(s) if p.pts is not None]
        geometry = (s.codec_context.width, s.codec_context.height, float(s.average_rate))
    with av.open(str(path)) as c:
        return geometry, keys, [f.to_ndarray(format="gray") for f in c.decode(video=0)]


def test_manifest_encoded_resumed_and_rewritten(tmp_path, inputs):
    before = _digest(inputs)
    out = tmp_path / "out"
    counts = preprocess_videos.main([str(inputs / "train.jsonl"), "--out", str(out), *SMALL])
    assert counts == {"encoded": 2, "skipped": 0, "unreadable": 1, "lines": 4}

    (w, h, rate), keys, frames = _stream(out / "clips" / "a.mp4")
    assert (w, h, rate) == (64, 48, 5.0)  # short side 96 -> 48; 25 fps -> 5
    assert len(frames) == 10 and [k for k, key in enumerate(keys) if key] == [0, 3, 6, 9]
    # Times hold: output frame j is input frame 5j (the input's brightness ramps by 5 a frame).
    ramp = [(25 * j) % 200 + 20 for j in range(10)]
    assert np.allclose([np.median(f) for f in frames], ramp, atol=4)
    (w, h, rate_b), _, frames_b = _stream(out / "clips" / "b.mp4")
    assert (w, h, rate_b, len(frames_b)) == (40, 30, 4.0, 20)  # never upscaled, never more frames

    lines = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    first = {"video": "clips/a.mp4", "caption": ["one", "two"], "id": "a", "start": 0.4, "end": 1.2, "k": [1]}
    assert lines[0] == first
    assert lines[1]["start"] == 1.0 and lines[2]["label"] == "small"
    assert lines[3]["caption"] == "a cat"  # an image line: kept, its path rebased to still resolve
    assert (out / lines[3]["image"]).resolve() == (inputs / "images" / "cat.png").resolve()
    samples = read_manifest(out / "train.jsonl")
    assert [s.path for s in samples][:3] == [str(out / "clips" / n) for n in ("a.mp4", "a.mp4", "b.mp4")]
    listed = (out / "train.jsonl.unreadable.txt").read_text()
    assert str(inputs / "clips" / "bad.mp4") in listed and listed.count("\n") == 1

    stamp = (out / "clips" / "a.mp4").stat().st_mtime_ns
    (out / "clips" / "b.mp4").unlink()
    again = preprocess_videos.main([str(inputs / "train.jsonl"), "--out", str(out), *SMALL])
    assert again == {"encoded": 1, "skipped": 1, "unreadable": 1, "lines": 4}
    assert (out / "clips" / "a.mp4").stat().st_mtime_ns == stamp  # done files are not touched
    assert not list(out.rglob("*.tmp*")) and _digest(inputs) == before  # inputs never written


def test_folder_in_parallel_and_output_never_over_inputs(tmp_path, inputs):
    out = tmp_path / "out"
    counts = preprocess_videos.main(
        ["--folder", str(inputs / "clips"), "--out", str(out), "--workers", "2", *SMALL]
    )
    assert counts == {"encoded": 2, "skipped": 0, "unreadable": 1, "lines": 2}
    assert [s.id for s in read_manifest(out / "videos.jsonl")] == ["a.mp4", "b.mp4"]
    with pytest.raises(ConfigError, match="holds the inputs"):
        preprocess_videos.main(["--folder", str(inputs / "clips"), "--out", str(inputs), *SMALL])
    with pytest.raises(SystemExit):
        preprocess_videos.main(["--out", str(out)])  # neither a manifest nor a folder


def test_root_out_manifest_and_encoder_flags(tmp_path, inputs):
    manifest = tmp_path / "elsewhere" / "m.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"video": "b.mp4", "caption": "small"}) + "\n")
    target = tmp_path / "lists" / "b_224.jsonl"
    args = [str(manifest), "--root", str(inputs / "clips"), "--out", str(tmp_path / "out")]
    args += ["--out-manifest", str(target), "--crf", "30", "--preset", "ultrafast", *SMALL]
    assert preprocess_videos.main(args)["encoded"] == 1
    (sample,) = read_manifest(target)
    assert sample.path == str(tmp_path / "lists" / ".." / "out" / "b.mp4") and Path(sample.path).is_file()
    assert not (target.parent / "b_224.jsonl.unreadable.txt").exists()
