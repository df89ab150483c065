"""WebDataset shard sources: reading, bad samples, the slot order over processes and workers, resume,
mixing with manifests, and tools/make_shards.py."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from tools import make_shards
from videovl.config import DataConfig
from videovl.data.collate import Collator
from videovl.data.datasets import ClipDataset
from videovl.data.loader import build_loader
from videovl.data.media.transforms import build_transform
from videovl.data.sources import ManifestError, Sample, write_manifest
from videovl.data.sources.shards import HashedLabels, open_shards, slot_pieces, slot_stream
from videovl.data.stream import ShardSource, StreamBatches


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 10, 3), value % 256, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path, samples, count=True):
    with wds.TarWriter(str(path), encoder=False) as writer:
        for sample in samples:
            writer.write(sample)
    if count:
        stats = path.with_name(path.name.split(".")[0] + "_stats.json")
        stats.write_text(json.dumps({"count": len(samples)}))
    return path


def image_samples(first, n):
    return [
        {"__key__": f"{i:06d}", "png": png(i), "txt": f"caption {i}".encode(), "json": b'{"label": "cat"}'}
        for i in range(first, first + n)
    ]


def clips(modality="image", text="caption", num_frames=1, label_to_id=None):
    transform = build_transform(DataConfig(image_size=8, random_resized_crop=False), train=True)
    return ClipDataset([], num_frames=num_frames, transform=transform, train=True, text=text,
                       label_to_id=label_to_id)  # fmt: skip


def image_shards(tmp_path, sizes, count=True):
    first = 0
    for k, n in enumerate(sizes):
        write_shard(tmp_path / f"{k:05d}.tar", image_samples(first, n), count=count)
        first += n
    return str(tmp_path / f"{{00000..{len(sizes) - 1:05d}}}.tar")


def stream(shards, batch_size=2, **kw):
    return StreamBatches([ShardSource(shards, clips())], [1.0], batch_size, **kw)


def indices(batches):
    return [[item["index"] for item in batch] for batch in batches]


def take(iterable, n):
    it = iter(iterable)
    return [next(it) for _ in range(n)]


def test_video_and_image_shards_with_captions_and_labels(tmp_path, test_video):
    video = test_video.read_bytes()
    write_shard(tmp_path / "v.tar", [
        {"__key__": "a", "mp4": video, "txt": b"a dog runs", "json": b'{"label": "running", "n": 1}'},
        {"__key__": "b", "mp4": video, "txt": b"a cat sits", "json": b'{"label": "sitting"}'},
    ])  # fmt: skip
    shards = open_shards(str(tmp_path / "v.tar"), "video-text")
    entries = take(slot_stream(shards, 0, 1, seed=0), 3)
    assert [e.sample.captions for e in entries] == [["a dog runs"], ["a cat sits"], ["a dog runs"]]
    assert [e.epoch for e in entries] == [0, 0, 1] and entries[0].sample.extra["n"] == 1
    first = entries[0].sample
    assert first.modality == "video" and first.data == video and first.path.endswith("v.tar#a.mp4")
    item = clips("video", num_frames=4).decode(first, (0, 0), 5)
    assert item["pixels"].shape == (3, 4, 8, 8) and item["text"] == "a dog runs" and item["index"] == 5

    labelled = open_shards(str(tmp_path / "v.tar"), "video-label")
    sample = next(slot_stream(labelled, 0, 1, seed=0)).sample
    decoder = clips("video", text="label", num_frames=2, label_to_id=HashedLabels())
    item = decoder.decode(sample, (0, 0), 0)
    assert item["text"] == "a video of a person running." and item["label"] == HashedLabels()["running"] >= 0

    (tmp_path / "i").mkdir()
    images = open_shards(image_shards(tmp_path / "i", [3]), "image-label")
    entry = next(slot_stream(images, 0, 1, seed=0))
    assert entry.sample.modality == "image" and entry.sample.label == "cat"
    assert clips().decode(entry.sample, (0, 0), 0)["pixels"].shape == (3, 1, 8, 8)


def test_caption_from_a_json_key_and_counts_without_stats_files(tmp_path):
    write_shard(tmp_path / "s.tar", [
        {"__key__": "a", "jpg": png(1), "json": json.dumps({"caption": "from json"}).encode()},
        {"__key__": "b", "jpg": png(2), "json": json.dumps({"caption": ["one", "two"]}).encode()},
    ], count=False)  # fmt: skip
    shards = open_shards(str(tmp_path / "s.tar"), "image-text", caption_key="caption")
    assert shards.counts == [2]  # read once to count
    assert [e.sample.captions for e in take(slot_stream(shards, 0, 1, seed=0), 2)] == [
        ["from json"],
        ["one", "two"],
    ]
    with pytest.raises(ManifestError, match="none of the 2 shards"):
        open_shards(str(tmp_path / "{x,y}.tar"), "image-text")


def test_bad_samples_are_replaced_named_and_never_stop_the_stream(tmp_path, test_video):
    video = test_video.read_bytes()
    good = lambda k: {"__key__": k, "mp4": video, "txt": k.encode()}  # noqa: E731
    write_shard(tmp_path / "00000.tar", [
        good("g0"),
        {"__key__": "cut", "mp4": video[: len(video) // 3], "txt": b"truncated"},
        {"__key__": "nocap", "mp4": video},
        {"__key__": "nomedia", "txt": b"no video"},
        good("g1"),
    ])  # fmt: skip
    (tmp_path / "00001.tar").write_bytes(b"not a tar at all" * 10)  # unreadable, but its stats claim 2
    (tmp_path / "00001_stats.json").write_text('{"count": 2}')
    shards = open_shards(str(tmp_path / "{00000..00001}.tar"), "video-text")
    assert shards.counts == [5, 2]
    batches = StreamBatches([ShardSource(shards, clips("video", num_frames=2))], [1.0], 7, seed=0)
    batch = next(iter(batches))
    assert len(batch) == 7 and {item["text"] for item in batch} <= {"g0", "g1"}
    bad = [b for item in batch for b in item["bad"]]
    assert len(bad) == 5 and sum("00001.tar" in b for b in bad) == 2
    assert {b.split("#")[1] for b in bad if "00000.tar" in b} == {"cut", "nocap", "nomedia"}
    collated = Collator(None)(batch)
    assert collated["pixels"].shape[0] == 7 and len(collated["bad"]) == 5


def test_slots_cover_every_sample_once_per_epoch_over_uneven_shards():
    counts = [5, 7, 2]
    for slots in (1, 2, 3, 4, 6):
        order = np.random.default_rng(0).permutation(3)
        pieces = [slot_pieces(counts, order, s, slots) for s in range(slots)]
        lengths = [sum(b - a for _, a, b in p) for p in pieces]
        assert sum(lengths) == 14 and max(lengths) - min(lengths) <= 1
        members = sorted((shard, m) for p in pieces for shard, a, b in p for m in range(a, b))
        assert members == sorted((shard, m) for shard, n in enumerate(counts) for m in range(n))


def test_block_shuffle_keeps_each_epoch_whole_and_any_position_reachable(tmp_path):
    shards = open_shards(image_shards(tmp_path, [5, 7, 2]), "image-text", shuffle_block=4)
    straight = [(e.index, e.epoch, e.position) for e in take(slot_stream(shards, 1, 2, seed=3, block=4), 21)]
    tar_order = [e.index for e in take(slot_stream(shards, 1, 2, seed=3), 7)]
    assert [i for i, _, _ in straight[:7]] != tar_order and sorted(i for i, _, _ in straight[:7]) == sorted(
        tar_order
    )
    assert [p for _, _, p in straight] == list(range(21)) and straight[7][1] == 1
    for start in (1, 5, 9, 14):
        resumed = [
            (e.index, e.epoch, e.position) for e in take(slot_stream(shards, 1, 2, 3, start, 4), 21 - start)
        ]
        assert resumed == straight[start:]


def test_ranks_take_equal_batches_and_split_each_epoch_over_uneven_shards(tmp_path):
    shards = open_shards(image_shards(tmp_path, [5, 7, 2]), "image-text")
    per_rank = [indices(take(stream(shards, 3, rank=r, world_size=2), 8)) for r in range(2)]
    assert all(len(batch) == 3 for rank in per_rank for batch in rank)
    # The first epoch's 14 samples split 7 / 7: each rank's stream starts with a disjoint half.
    firsts = [sum(rank, [])[:7] for rank in per_rank]
    assert sorted(firsts[0] + firsts[1]) == list(range(14))


def test_too_few_samples_for_the_slots_is_a_clear_error(tmp_path):
    shards = open_shards(image_shards(tmp_path, [3]), "image-text")
    with pytest.raises(ValueError, match="lower data.num_workers"):
        stream(shards, world_size=2, num_workers=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_started_at_any_step_continues_the_straight_stream(tmp_path, workers):
    shards = open_shards(image_shards(tmp_path, [5, 7, 2]), "image-text")

    def run(start, n):
        data = stream(shards, 2, rank=1, world_size=2, num_workers=workers, seed=4, start_step=start)
        return [
            b["index"].tolist()
            for b in take(build_loader(data, collate_fn=Collator(None), num_workers=workers), n)
        ]

    straight = run(0, 9)
    assert run(3, 6) == straight[3:] and run(4, 5) == straight[4:]


@pytest.mark.parametrize("lanes", [0, 2])
def test_recorded_positions_resume_the_stream_without_replaying_it(tmp_path, monkeypatch, lanes):
    shards = open_shards(image_shards(tmp_path, [5, 7, 2]), "image-text")
    for k in range(4):
        (tmp_path / f"m{k}.png").write_bytes(png(100 + k))
    manifest = [Sample(str(tmp_path / f"m{k}.png"), "image", [f"manifest {k}"], id=str(k)) for k in range(4)]
    transform = build_transform(DataConfig(image_size=8, random_resized_crop=False), train=True)

    def batches(start=0, positions=None):
        parts = [ShardSource(shards, clips()), ClipDataset(manifest, num_frames=1, transform=transform,
                                                           train=True, index_offset=14)]  # fmt: skip
        return StreamBatches(parts, [2.0, 1.0], 3, rank=1, world_size=2, num_workers=lanes, seed=6,
                             start_step=start, positions=positions)  # fmt: skip

    def run(start, n, positions=None):
        loader = build_loader(batches(start, positions), collate_fn=Collator(None), num_workers=lanes)
        return take(loader, n)

    straight = run(0, 10)
    recorded: dict[int, dict[int, int]] = {}
    for batch in straight[:6]:  # what the loop keeps: the last position each lane reported
        recorded[batch["stream"]["lane"]] = batch["stream"]["positions"]
    assert set(recorded) == set(range(max(1, lanes))) and set(recorded[0]) == {0}
    replay = batches()
    for lane, where in recorded.items():  # the recorded positions are what a replay computes
        assert where == {0: replay._consumed(0, lane, 6 + (lane - 6) % max(1, lanes))}
    monkeypatch.setattr(StreamBatches, "_consumed", lambda *a: pytest.fail("replayed the draws"))
    resumed = run(6, 4, recorded)
    assert [b["index"].tolist() for b in resumed] == [b["index"].tolist() for b in straight[6:]]
    assert [b["text"] for b in resumed] == [b["text"] for b in straight[6:]]


def test_mixing_with_a_manifest_source(tmp_path):
    shards = open_shards(image_shards(tmp_path, [4, 4]), "image-text")
    for k in range(6):
        (tmp_path / f"m{k}.png").write_bytes(png(100 + k))
    manifest = [Sample(str(tmp_path / f"m{k}.png"), "image", [f"manifest {k}"], id=str(k)) for k in range(6)]
    transform = build_transform(DataConfig(image_size=8, random_resized_crop=False), train=True)
    mixed = ClipDataset(manifest, num_frames=1, transform=transform, train=True, index_offset=8)

    def run(start, n, workers):
        data = StreamBatches([ShardSource(shards, clips()), mixed], [1.0, 1.0], 4, num_workers=workers,
                             seed=2, start_step=start)  # fmt: skip
        return take(build_loader(data, collate_fn=Collator(None), num_workers=workers), n)

    straight = run(0, 8, 0)
    seen = sum((b["index"].tolist() for b in straight), [])
    assert any(i < 8 for i in seen) and any(i >= 8 for i in seen)  # both sources, indices apart
    texts = [t for b in straight for t in b["text"]]
    assert any(t.startswith("caption") for t in texts) and any(t.startswith("manifest") for t in texts)
    for workers in (0, 2):  # each worker count has its own order (a lane per worker), resumable exactly
        whole = [b["index"].tolist() for b in (straight if workers == 0 else run(0, 8, workers))]
        assert [b["index"].tolist() for b in run(5, 3, workers)] == whole[5:]


def test_make_shards_writes_counts_stats_and_resumes(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    rows = []
    for k in range(5):
        (media / f"{k}.png").write_bytes(png(k))
        rows.append({"image": f"media/{k}.png", "caption": [f"c{k}", f"d{k}"], "label": "l", "id": f"s{k}"})
    rows.insert(2, {"image": "media/missing.png", "caption": "gone"})
    write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "shards"
    args = [str(tmp_path / "m.jsonl"), str(out), "--samples-per-shard", "2"]
    total = make_shards.main(args)
    assert (total["shards"], total["samples"], total["failed"]) == (3, 5, 1)
    assert "missing.png" in total["failures"][0]
    assert [json.loads((out / f"0000{k}_stats.json").read_text())["count"] for k in range(3)] == [2, 2, 1]
    shards = open_shards(total["pattern"], "image-text")
    assert shards.counts == [2, 2, 1]
    samples = [e.sample for e in take(slot_stream(shards, 0, 1, seed=0), 5)]
    assert {s.id for s in samples} == {f"{k:09d}" for k in (0, 1, 3, 4, 5)}
    assert all(s.extra["id"].startswith("s") and len(s.captions) == 1 for s in samples)
    before = (out / "00001.tar").read_bytes()
    (out / "00002_stats.json").unlink()  # as if stopped while writing the last shard
    again = make_shards.main(args)
    assert again["resumed_after_shards"] == 2 and again["samples"] == 5
    assert (out / "00001.tar").read_bytes() == before
    with pytest.raises(ManifestError, match="other options"):
        make_shards.main(args[:2] + ["--samples-per-shard", "3"])


@pytest.fixture(scope="module")
def demo_shards(tiny_demo, tmp_path_factory):
    """The tiny demo's training videos and images as shards of uneven size (the last one short)."""
    out = tmp_path_factory.mktemp("demo_shards")
    videos = make_shards.main(
        [str(tiny_demo / "video_train.jsonl"), str(out / "v"), "--samples-per-shard", "14"]
    )
    images = make_shards.main(
        [str(tiny_demo / "image_train.jsonl"), str(out / "i"), "--samples-per-shard", "30"]
    )
    return videos["pattern"], images["pattern"]


def shard_stage(videos: str, images: str, tiny_demo) -> list[str]:
    return [
        "stages=[{name: joint, steps: 4, warmup_steps: 1, video_ratio: 0.5, sources: ["
        f"{{shards: '{videos}', kind: video-text}}, "
        f"{{manifest: '{tiny_demo / 'video_train.jsonl'}', kind: video-text, weight: 0.5}}, "
        f"{{shards: '{images}', kind: image-label}}], "
        "losses: {contrastive: 1.0, frame: 0.5}}]",
        "data.val_manifest=null",
        "data.val_image_manifest=null",
        "data.test_manifest=null",
    ]


@pytest.mark.slow
def test_pretraining_on_shards_resumes_with_the_same_samples(
    tiny_demo, demo_shards, tmp_path, monkeypatch, capsys, one_thread
):
    from safetensors.torch import load_file

    from tests.conftest import tiny_pretrain_args
    from tools import pretrain as tool
    from videovl.train import loop

    seen: list = []
    real = loop.open_batches

    def recording(*args, **kwargs):
        for modality, batch in real(*args, **kwargs):
            seen.append((modality, batch["index"].tolist()))
            yield modality, batch

    monkeypatch.setattr(loop, "open_batches", recording)
    broken = tmp_path / "broken.tar"  # an unreadable shard among the good ones: skipped, counted, reported
    broken.write_bytes(b"\0garbage" * 50)
    (tmp_path / "broken_stats.json").write_text('{"count": 3}')
    common = shard_stage(*demo_shards, tiny_demo)
    common[0] = common[0].replace(
        "sources: [", f"sources: [{{shards: '{broken}', kind: video-text, weight: 0.5}}, "
    )
    tool.main(tiny_pretrain_args(tiny_demo, tmp_path / "straight", *common))
    straight, seen[:] = list(seen), []
    # --resume auto: a fresh start the first time (no checkpoint yet), the checkpoint the second
    tool.main(
        tiny_pretrain_args(
            tiny_demo, tmp_path / "resumed", *common, "--resume", "auto", "--stop-after-steps", "2"
        )
    )
    # the resume opens each stream where the checkpoint recorded it, without replaying earlier draws
    monkeypatch.setattr(StreamBatches, "_consumed", lambda *a: pytest.fail("replayed the draws"))
    tool.main(tiny_pretrain_args(tiny_demo, tmp_path / "resumed", *common, "--resume", "auto"))
    assert seen == straight and len(straight) == 4
    assert "broken.tar" in capsys.readouterr().out  # the end-of-run report of unreadable samples
    assert {m for m, _ in straight} == {"video", "image"}
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step_00000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.slow
def test_two_processes_on_shards_take_the_same_steps_and_distinct_samples(tiny_demo, demo_shards, tmp_path):
    from tests.conftest import tiny_pretrain_args

    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "29617",
        str(root / "tests" / "record_batches.py"), str(tmp_path), "--cpu",
        *tiny_pretrain_args(tiny_demo, tmp_path / "run", *shard_stage(*demo_shards, tiny_demo)),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 4  # every step on both ranks: none waits for the other
    for (m0, i0), (m1, i1) in zip(*ranks):
        assert m0 == m1 and len(i0) == len(i1) == 8 and not set(i0) & set(i1)
    assert (tmp_path / "run" / "checkpoints" / "step_00000004").is_dir()


def noise_png(seed: int, side: int = 64) -> bytes:
    """An incompressible png of about 3 x side**2 bytes."""
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_make_shards_by_bytes_shuffled_and_its_errors(tmp_path):
    rows = []
    for k in range(6):
        (tmp_path / f"{k}.png").write_bytes(noise_png(k))
        rows.append({"image": f"{k}.png", "caption": f"c{k}"})
    write_manifest(tmp_path / "m.jsonl", rows)
    # room for two samples and not three (json and txt: a header and a padded block each)
    media = [(tmp_path / f"{k}.png").stat().st_size for k in range(6)]
    per_sample = [make_shards.member_bytes(size) + 4 * 512 for size in media]
    limit = make_shards.tar_bytes(2 * max(per_sample))
    assert make_shards.tar_bytes(3 * min(per_sample)) > limit
    args = [str(tmp_path / "m.jsonl"), str(tmp_path / "s"), "--max-bytes", str(limit), "--shuffle"]
    total = make_shards.main(args + ["--seed", "1"])
    assert total["shards"] == 3 and total["samples"] == 6
    assert all((tmp_path / "s" / f"0000{k}.tar").stat().st_size <= limit for k in range(3))
    shards = open_shards(total["pattern"], "image-text")
    captions = [e.sample.captions[0] for e in take(slot_stream(shards, 0, 1, seed=0), 6)]
    assert sorted(captions) == [f"c{k}" for k in range(6)] and captions != sorted(captions)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "tools" / "make_shards.py"), str(tmp_path / "no.jsonl"),
                           str(tmp_path / "t")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert proc.returncode == 2 and "no.jsonl does not exist" in proc.stderr


@pytest.mark.parametrize("limit", [300_000, 40_000, 20_000])
def test_make_shards_max_bytes_holds_with_headers_padding_and_text_members(tmp_path, limit):
    """Shards stay at most --max-bytes, counted as written: long captions (the json and txt members) and
    the tar's headers and padding cannot push a shard over; only a sample that alone does not fit gets a
    shard of its own."""
    rows = []
    for k in range(40):
        (tmp_path / f"{k}.png").write_bytes(noise_png(k, side=16 + 3 * k))  # 0.8 to 43 KB
        rows.append({"image": f"{k}.png", "caption": [f"caption {k} " * (40 * (k % 5) + 1), "another"]})
    write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "s"
    total = make_shards.main([str(tmp_path / "m.jsonl"), str(out), "--max-bytes", str(limit)])
    assert total["samples"] == 40 and total["shards"] > 1
    for k in range(total["shards"]):
        tar = out / f"{make_shards.shard_name(k)}.tar"
        info = json.loads((out / f"{make_shards.shard_name(k)}_stats.json").read_text())
        assert tar.stat().st_size == info["bytes"]
        assert tar.stat().st_size <= limit or info["count"] == 1, (k, tar.stat().st_size, limit)
    entries = take(slot_stream(open_shards(total["pattern"], "image-text"), 0, 1, seed=0), 40)
    assert sorted(e.sample.id for e in entries) == [f"{k:09d}" for k in range(40)]
