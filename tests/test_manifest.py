import json

import pytest

from videovl.data.sources import ManifestError, read_manifest, write_manifest


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_lines(tmp_path):
    path = _write(
        tmp_path / "m.jsonl",
        [
            json.dumps({"video": "a.mp4", "caption": ["x", " y "], "id": "a", "digits": [3]}),
            "",
            "# a comment",
            json.dumps({"image": "b.png", "caption": "a cat", "label": "cat"}),
            json.dumps({"video": "c.mp4", "label": "juggling", "start": 1, "end": 2.5}),
        ],
    )
    a, b, c = read_manifest(path)
    assert a.path == str(tmp_path / "a.mp4") and a.modality == "video" and a.captions == ["x", "y"]
    assert a.id == "a" and a.extra == {"digits": [3]}
    assert b.modality == "image" and b.captions == ["a cat"] and b.label == "cat" and b.id == "b.png"
    assert (c.start, c.end, c.captions) == (1.0, 2.5, [])


def test_root_overrides_manifest_folder(tmp_path):
    path = _write(tmp_path / "m.jsonl", [json.dumps({"video": "a.mp4"})])
    assert read_manifest(path, root="/data/videos")[0].path == "/data/videos/a.mp4"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"caption": "x"}), "neither 'video' nor 'image'"),
        (json.dumps({"video": "a.mp4", "image": "b.png"}), "both 'video' and 'image'"),
        (json.dumps({"video": "a.mp4", "caption": 3}), "'caption' must be"),
        (json.dumps({"video": "a.mp4", "start": "1s"}), "'start' must be a number"),
        (json.dumps({"video": "a.mp4", "start": 5, "end": 1}), "before 'start'"),
        (json.dumps(["a.mp4"]), "expected a JSON object"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"video": "ok.mp4"}), line])
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert f"{path}:2" in str(e.value) and message in str(e.value)


def test_missing_and_empty(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="no samples"):
        read_manifest(_write(tmp_path / "empty.jsonl", ["# nothing"]))


def test_write_then_read(tmp_path):
    rows = [{"video": "v/1.mp4", "caption": "one", "label": "l"}, {"image": "i/2.png"}]
    write_manifest(tmp_path / "out" / "m.jsonl", rows)
    samples = read_manifest(tmp_path / "out" / "m.jsonl")
    assert [s.path for s in samples] == [str(tmp_path / "out" / "v/1.mp4"), str(tmp_path / "out" / "i/2.png")]
