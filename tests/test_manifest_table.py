"""The array storage of manifests against the object reader, sample for sample, on real annotation files."""

import json
import pickle

import numpy as np
import pytest

from videovl.data.annotations.activitynet import read_activitynet
from videovl.data.annotations.kinetics import read_kinetics
from videovl.data.annotations.msrvtt import read_msrvtt_test
from videovl.data.sources import (
    ManifestError,
    Sample,
    SampleTable,
    caption_counts,
    labels,
    manifest_cache,
    manifest_table,
    modalities,
    read_manifest,
    read_manifest_objects,
)
from videovl.data.sources.manifest_cache import cache_path


def _row(s: Sample, plain: bool, k: int) -> dict:
    """A manifest line for ``s``; ``plain`` leaves out extra keys (the pyarrow path), else keeps them."""
    row = {"video": s.path}
    if s.captions:  # both spellings of captions (mixed in a block: line by line), padded ones to strip
        single = len(s.captions) == 1 and (plain or k % 2)
        row["caption"] = s.captions[0] if single else list(s.captions)
        if k % 7 == 0:
            row["caption"] = f"  {s.captions[0]}\t"
    if s.label is not None:
        row["label"] = s.label
    if s.start is not None or "time_start" in s.extra:
        row["start"], row["end"] = s.start or s.extra["time_start"], s.end or s.extra["time_end"]
    if k % 3:
        row["id"] = s.id
    return row | ({} if plain else s.extra)


@pytest.fixture(scope="module")
def annotation_samples(shared_dir) -> dict[str, list[Sample]]:
    root = shared_dir / "annotations"
    return {
        "msrvtt": read_msrvtt_test(root / "msrvtt" / "MSRVTT_JSFUSION_test.csv")[0],
        "activitynet": read_activitynet(root / "activitynet" / "val_1.json")[0],
        "kinetics": read_kinetics(root / "kinetics400" / "val.csv")[0],
    }


@pytest.mark.parametrize("name", ["msrvtt", "activitynet", "kinetics"])
@pytest.mark.parametrize("plain", [True, False])
def test_table_equals_objects_on_annotation_files(tmp_path, monkeypatch, annotation_samples, name, plain):
    samples = annotation_samples[name]
    lines = [json.dumps(_row(s, plain, k), ensure_ascii=k % 2 == 0) for k, s in enumerate(samples)]
    lines.insert(len(lines) // 2, "# a comment in the middle")  # one block goes line by line
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(manifest_table, "_BLOCK_BYTES", 64 << 10)  # many blocks: fast and slow ones mix
    fast = []
    add_arrow = manifest_table._Builder.add_arrow
    monkeypatch.setattr(
        manifest_table._Builder, "add_arrow", lambda b, t: fast.append(add_arrow(b, t)) or fast[-1]
    )
    table = read_manifest(path, cache=False)
    assert any(fast) == plain  # plain lines go through pyarrow, lines with extra keys line by line
    objects = read_manifest_objects(path)
    assert len(table) == len(objects) == len(samples)
    assert list(table) == objects
    assert table[-1] == objects[-1] and list(table[10:20:3]) == objects[10:20:3]
    assert list(modalities(table)) == list(modalities(objects))
    assert list(caption_counts(table)) == [len(s.captions) for s in objects]
    assert list(labels(table)) == [s.label for s in objects]


def test_odd_lines_equal_the_object_reader(tmp_path):
    rows = [
        {"video": "a.mp4", "caption": ["x", " y "], "id": 7, "digits": [3, 1.5], "nested": {"k": None}},
        {"image": "b.png", "caption": "a cat", "label": "cat", "start": 1, "end": 2.5},
        {"video": "c.mp4", "label": None, "start": None, "id": None},
        {"video": "sub//d.mp4", "caption": [], "id": "sub//d.mp4", "end": 4},
        {"video": "/abs/e.mp4", "caption": "caf\u00e9 \U0001f600\u3000", "label": "\u00e9t\u00e9"},
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\r\n".join(json.dumps(r) for r in rows) + "\n\n  \n", encoding="utf-8")
    assert list(read_manifest(path, cache=False)) == read_manifest_objects(path)
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(json.dumps(r) for r in (rows[1], rows[4], rows[1])))  # no final newline
    assert list(read_manifest(plain, root="/data", cache=False)) == read_manifest_objects(plain, root="/data")


def test_errors_name_the_line_in_any_block(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_table, "_BLOCK_BYTES", 256)
    good = [json.dumps({"video": f"v{i}.mp4", "caption": "c"}) for i in range(40)]
    cases = [
        ("{not json", "not valid JSON"),
        (json.dumps({"video": "a.mp4", "start": 5, "end": 1}), "before"),
    ]
    for bad, message in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join([*good[:30], "# c", bad, *good[30:]]) + "\n")
        with pytest.raises(ManifestError, match=f"{path}:32: .*{message}"):
            read_manifest(path, cache=False)
    path.write_bytes(b"\n".join(s.encode() for s in good[:35]) + b'\n{"video": "\xff.mp4"}\n')
    with pytest.raises(ManifestError, match=f"{path}:36: not valid UTF-8"):
        read_manifest(path, cache=False)


def test_views_pickle_and_column_helpers(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        "".join(json.dumps({"video": f"{i}.mp4", "label": "ab"[i % 2]}) + "\n" for i in range(10))
    )
    table = read_manifest(path, cache=False)
    view = table[2:8].take([0, -1, 2])
    assert [s.id for s in view] == ["2.mp4", "7.mp4", "4.mp4"]
    assert [s.id for s in pickle.loads(pickle.dumps(view))] == ["2.mp4", "7.mp4", "4.mp4"]
    assert list(labels(view)) == ["a", "b", "a"] and list(caption_counts(view)) == [0, 0, 0]
    assert (table + [Sample("x.mp4", "video")])[-1].path == "x.mp4"
    with pytest.raises(IndexError):
        table[10]


def test_cache_reused_invalidated_and_never_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"video": f"{i}.mp4", "caption": "c"}) + "\n" for i in range(50)))
    first = read_manifest(path, cache=True)
    assert cache_path(path).is_file()
    again = read_manifest(path, cache=True)
    assert isinstance(again.columns["flags"], np.memmap) and list(again) == list(first)
    with path.open("a") as f:  # the manifest changes: the cache no longer applies
        f.write(json.dumps({"video": "new.mp4"}) + "\n")
    assert read_manifest(path, cache=True)[-1].id == "new.mp4"
    assert read_manifest(path, cache=True)[-1].id == "new.mp4"  # from the rewritten cache
    cache_path(path).write_bytes(b"VVLTABLE garbage")  # a damaged cache is ignored
    assert len(read_manifest(path, cache=True)) == 51

    # A folder that cannot be written (a path under a regular file fails even for root): the user cache
    # folder takes the cache, and with neither the manifest is still read.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    user = tmp_path / "user"
    places = {False: blocked / "m.vvltable", True: user / "m.vvltable"}
    monkeypatch.setattr(manifest_cache, "cache_path", lambda manifest, user=False: places[user])
    assert len(read_manifest(path, cache=True)) == 51 and places[True].is_file()
    assert isinstance(read_manifest(path, cache=True).columns["flags"], np.memmap)
    places[True] = blocked / "user.vvltable"
    assert len(read_manifest(path, cache=True)) == 51


def test_small_manifests_leave_no_cache_by_default(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"video": "a.mp4"}) + "\n")
    read_manifest(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_from_samples_round_trip():
    samples = [
        Sample("/v/a.mp4", "video", ["x"], "l", 1.0, 2.0, "a", {"k": [1]}),
        Sample("/i/b.png", "image"),
    ]
    assert list(SampleTable.from_samples(samples)) == samples
