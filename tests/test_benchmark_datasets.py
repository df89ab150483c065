import json

import pytest

from videovl.data.annotations.activitynet import read_activitynet, repair_segment
from videovl.data.annotations.kinetics import clip_name, read_kinetics, read_label_map
from videovl.data.annotations.msrvtt import (
    read_msrvtt_ids,
    read_msrvtt_test,
    read_msrvtt_train,
    split_validation,
)


@pytest.fixture(scope="module")
def ann(shared_dir):
    return shared_dir / "annotations"


def test_msrvtt_test_split(ann, tmp_path):
    (tmp_path / "video9770.mp4").touch()
    samples, report = read_msrvtt_test(ann / "msrvtt" / "MSRVTT_JSFUSION_test.csv", tmp_path)
    assert len(samples) == 1000 and len({s.id for s in samples}) == 1000
    assert all(len(s.captions) == 1 for s in samples)
    assert samples[0].id == "video9770" and samples[0].path == str(tmp_path / "video9770.mp4")
    assert samples[0].captions == ["a person is connecting something to system"]
    assert report.counts == {"clips": 1000, "missing_videos": 999} and len(report.missing) == 999


def test_msrvtt_train_lists_and_validation_split(ann):
    nine, seven = (
        read_msrvtt_ids(ann / "msrvtt" / "MSRVTT_train.9k.csv"),
        read_msrvtt_ids(ann / "msrvtt" / "MSRVTT_train.7k.csv"),
    )
    assert len(nine) == len(set(nine)) == 9000 and len(seven) == len(set(seven)) == 7010
    test_ids = {s.id for s in read_msrvtt_test(ann / "msrvtt" / "MSRVTT_JSFUSION_test.csv")[0]}
    assert not test_ids & set(nine)
    train, val = split_validation(nine, num_val=500, seed=0)
    assert len(train) == 8500 and len(val) == 500 and not set(train) & set(val)
    assert set(train) | set(val) == set(nine)
    assert split_validation(list(reversed(nine)), 500, 0) == (train, val)  # independent of file order
    assert split_validation(nine, 500, 1)[1] != val


def test_msrvtt_train_captions(ann, tmp_path):
    with pytest.raises(FileNotFoundError, match="MSRVTT_data.json"):
        read_msrvtt_train(ann / "msrvtt" / "MSRVTT_train.7k.csv", tmp_path / "MSRVTT_data.json")
    ids = read_msrvtt_ids(ann / "msrvtt" / "MSRVTT_train.7k.csv")
    sentences = [
        {"video_id": v, "caption": f"clip {v} take {k} ", "sen_id": k} for v in ids[:-1] for k in range(2)
    ]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    args = (ann / "msrvtt" / "MSRVTT_train.7k.csv", tmp_path / "MSRVTT_data.json")
    train, report = read_msrvtt_train(*args, num_val=10)
    val, _ = read_msrvtt_train(*args, split="val", num_val=10)
    assert len(val) + len(train) == 7009 and report.problems == [
        f"{ids[-1]}: no captions in {args[1]}; skipped"
    ]
    assert train[0].captions == [f"clip {train[0].id} take 0", f"clip {train[0].id} take 1"]


def test_activitynet_val_1_paragraphs(ann):
    samples, report = read_activitynet(ann / "activitynet" / "val_1.json")
    assert len(samples) == 4917 and report.counts["sentences"] == 17505
    assert report.counts["swapped"] == 0 and report.counts["clamped"] == 5 and len(report.problems) == 5
    first = samples[0]
    assert first.id == "v_uqiMw7tQ1Cc" and len(first.captions) == 1
    assert first.captions[0] == (
        "A weight lifting tutorial is given. "
        "The coach helps the guy in red with the proper body placement and lifting technique."
    )
    for s in samples:
        starts = [seg[0] for seg in s.extra["segments"]]
        assert starts == sorted(starts)
        assert all(0 <= a <= b <= s.extra["duration"] for a, b in s.extra["segments"])


def test_activitynet_train_repairs_inverted_segments(ann):
    samples, report = read_activitynet(ann / "activitynet" / "train.json")
    assert len(samples) == 10009 and report.counts["sentences"] == 37421  # nothing dropped
    swapped = [p for p in report.problems if "swapped" in p]
    assert len(swapped) == 2 and {p.split()[0] for p in swapped} == {"v_0bosp4-pyTM", "v_rhOtqArO-3Y"}
    assert report.counts["clamped"] == 29
    assert repair_segment(5.0, 2.0, 10.0) == (2.0, 5.0, ["start > end: swapped"])
    assert repair_segment(1.0, 12.5, 10.0)[:2] == (1.0, 10.0)


def test_activitynet_file_lookup(tmp_path):
    data = {
        "v_a": {"duration": 10.0, "timestamps": [[5, 8], [0, 4]], "sentences": [" second.", "First."]},
        "v_b": {"duration": 10.0, "timestamps": [[0, 1]], "sentences": ["x"]},
        "v_c": {"duration": 10.0, "timestamps": [[0, 1]], "sentences": ["y"]},
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    (tmp_path / "vids" / "sub").mkdir(parents=True)
    (tmp_path / "vids" / "v_a.mkv").touch()
    (tmp_path / "vids" / "sub" / "b.webm").touch()
    samples, report = read_activitynet(tmp_path / "ann.json", tmp_path / "vids")
    assert samples[0].captions == ["First. second."]
    assert samples[0].path.endswith("v_a.mkv") and samples[1].path.endswith("sub/b.webm")
    assert report.missing == ["v_c"] and report.counts["missing_videos"] == 1


def test_kinetics_label_maps_and_csvs(ann):
    k400 = ann / "kinetics400"
    labels = read_label_map(k400 / "label_map_k400.txt")
    assert len(labels) == 400 and labels == read_label_map(k400 / "kinetics_400_labels.csv")
    assert labels["abseiling"] == 0 and labels["zumba"] == 399
    val, report = read_kinetics(k400 / "val.csv", label_map=labels)
    assert len(val) == 19906 and report.counts["classes"] == 400 and not report.problems
    assert val[0].path == "0wR5jVB-WPk_000417_000427.mp4" and val[0].label == "abseiling"
    assert val[0].extra == {"split": "val", "time_start": 417, "time_end": 427, "is_cc": 0}
    old, _ = read_kinetics(k400 / "validate_deepmind_format_subset.csv", label_map=labels)
    assert len(old) == 17778 and "is_cc" not in old[0].extra and {s.label for s in old} <= set(labels)


def test_kinetics_missing_clips_are_counted(tmp_path):
    rows = [
        "label,youtube_id,time_start,time_end,split",
        "air drumming,aaa,1,11,val",
        "abseiling,bbb,20,30,val",
        "abseiling,ccc,0,10,val",
        "flying,ddd,0,10,val",
    ]
    (tmp_path / "ann.csv").write_text("\n".join(rows))
    root = tmp_path / "clips"
    (root / "air drumming").mkdir(parents=True)
    (root / "air drumming" / clip_name("aaa", 1, 11)).touch()  # class folders
    (root / "bbb.mp4").touch()  # untrimmed download
    samples, report = read_kinetics(tmp_path / "ann.csv", root, label_map={"abseiling": 0, "air drumming": 1})
    assert [s.id for s in samples] == ["aaa", "bbb"]
    assert (samples[1].start, samples[1].end) == (20.0, 30.0) and samples[0].start is None
    assert report.missing == [clip_name("ccc", 0, 10)] and report.counts["missing_clips"] == 1
    assert report.counts["unknown_labels"] == 1 and "flying" in report.problems[0]
    kept, _ = read_kinetics(tmp_path / "ann.csv", root, drop_missing=False)
    assert len(kept) == 4
    (tmp_path / "bad.csv").write_text("label,youtube_id\nx,y\n")
    with pytest.raises(ValueError, match="time_start"):
        read_kinetics(tmp_path / "bad.csv")
