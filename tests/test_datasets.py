import logging

import numpy as np
import pytest
import torch
from conftest import write_test_video
from PIL import Image

from videovl.data.collate import Collator, text_hash
from videovl.data.datasets import ClipDataset, Draw, DrawConcat, MultiViewDataset, build_label_map
from videovl.data.loader import build_loader
from videovl.data.media.transforms import ClipTransform
from videovl.data.mixing import MixedBatches, modality_order
from videovl.data.samplers import WeightedBatchSampler
from videovl.data.sources import Sample

KEYS = {"pixels", "text", "label", "index", "valid", "bad"}
CAPTIONS = [f"caption {k}" for k in range(20)]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    videos = [write_test_video(root / f"v{k}.mp4", num_frames=12 + 4 * k) for k in range(2)]
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(root / "img.png")
    return {
        "videos": [str(v) for v in videos],
        "image": str(root / "img.png"),
        "missing": str(root / "gone.mp4"),
    }


def make(samples, train=True, **kwargs):
    kwargs.setdefault("num_frames", 4)
    return ClipDataset(samples, transform=ClipTransform(16, train=train), train=train, **kwargs)


def video_samples(media, missing=False):
    samples = [
        Sample(p, "video", CAPTIONS, label=lab) for p, lab in zip(media["videos"], ["jumping", "running"])
    ]
    return samples + ([Sample(media["missing"], "video", ["never seen"], label="running")] if missing else [])


def test_items_have_exactly_the_schema(media):
    ds = make(video_samples(media) + [Sample(media["image"], "image", ["a grey square"], label="square")])
    labels = build_label_map(ds.samples)
    assert labels == {"jumping": 0, "running": 1, "square": 2}
    for i in range(3):
        item = ds[i]
        assert set(item) == KEYS
        assert item["pixels"].shape == ((3, 4, 16, 16) if i < 2 else (3, 1, 16, 16))
        assert item["index"] == i and item["valid"] is True and item["bad"] == [] and item["label"] == -1
    with pytest.raises(IndexError):
        ds[3]


def test_text_modes_and_prompts(media):
    samples = video_samples(media) + [Sample(media["image"], "image", [], label="cat")]
    labels = build_label_map(samples)
    ds = make(samples, train=False, text="label", label_to_id=labels)
    assert [ds[i]["text"] for i in range(3)] == [
        "a video of a person jumping.",
        "a video of a person running.",
        "a photo of a cat.",
    ]
    assert [ds[i]["label"] for i in range(3)] == [labels["jumping"], labels["running"], labels["cat"]]
    custom = make(samples, train=False, text="label", prompt="{label} in a clip")
    assert custom[0]["text"] == "jumping in a clip"
    assert make(samples, train=False)[0]["text"] == "caption 0"  # evaluation: the first caption
    assert make(samples, text="none")[0]["text"] == ""
    with pytest.raises(ValueError, match="label_to_id"):
        make(samples, label_to_id={"jumping": 0})
    with pytest.raises(ValueError, match="placeholder"):
        make(samples, text="label", prompt="no slot")
    with pytest.raises(ValueError, match="backend"):
        make(samples, backend="opencv")


def test_train_randomness_is_seeded_by_the_draw(media):
    a, b = make(video_samples(media), seed=3), make(video_samples(media), seed=3)
    first = [a[0]["text"] for _ in range(3)]  # a plain index: one fixed view
    assert len(set(first)) == 1 and first[0] == b[0]["text"]
    torch.testing.assert_close(a[1]["pixels"], b[1]["pixels"], rtol=0, atol=0)
    same = [a[Draw(1, step=4, slot=2)] for _ in range(2)] + [b[Draw(1, step=4, slot=2)]]
    assert len({x["text"] for x in same}) == 1
    for x in same[1:]:
        torch.testing.assert_close(x["pixels"], same[0]["pixels"], rtol=0, atol=0)
    texts = {a[Draw(0, step, 0)]["text"] for step in range(12)}
    assert len(texts) > 1 and texts <= set(CAPTIONS)
    other = make(video_samples(media), seed=4)  # another seed draws other views at the same steps
    assert [a[Draw(0, s, 0)]["text"] for s in range(12)] != [other[Draw(0, s, 0)]["text"] for s in range(12)]


def test_every_draw_of_a_row_is_a_fresh_view(media):
    """A row with 3 captions shows all 3 over 50 steps of the training sampler."""
    ds = make([Sample(media["videos"][0], "video", ["one", "two", "three"])])
    sampler = WeightedBatchSampler([1], [1.0], batch_size=1, seed=0)
    loader = build_loader(ds, batch_sampler=sampler, collate_fn=Collator(None))
    texts = [batch["text"][0] for batch, _ in zip(loader, range(50), strict=False)]
    assert set(texts) == {"one", "two", "three"}


def test_a_video_drawn_at_two_steps_gets_other_frame_offsets(media, tmp_path):
    """With crops off, pixels differ only through the frames chosen; a clip as long as the model's frames
    leaves no room to choose, so its draws are equal."""
    short = str(write_test_video(tmp_path / "short.mp4", num_frames=4))
    samples = [Sample(media["videos"][1], "video", ["long"]), Sample(short, "video", ["short"])]
    still = ClipTransform(16, train=True, random_resized_crop=False)
    ds = ClipDataset(samples, num_frames=4, transform=still, train=True)
    long_views = [ds[Draw(0, step, 0)]["pixels"] for step in range(4)]
    assert any(not torch.equal(long_views[0], v) for v in long_views[1:])
    short_views = [ds[Draw(1, step, 0)]["pixels"] for step in range(3)]
    assert all(torch.equal(short_views[0], v) for v in short_views[1:])


def test_train_replaces_unreadable_samples(media, caplog):
    ds = make(video_samples(media, missing=True), index_offset=100)
    with caplog.at_level(logging.WARNING, logger="videovl.data.datasets"):
        items = [ds[2] for _ in range(3)]
    assert sum("gone.mp4" in r.getMessage() for r in caplog.records) == 1  # logged once
    for item in items:
        assert item["valid"] and item["bad"] == [media["missing"]] and item["index"] in (100, 101)
        assert item["text"] in CAPTIONS  # the replacement's own caption
    assert items[0]["index"] == make(video_samples(media, missing=True), index_offset=100)[2]["index"]
    with pytest.raises(RuntimeError, match="scan_videos"):
        make([Sample(media["missing"], "video", ["x"])], max_retries=2)[0]


def test_eval_reports_unreadable_samples(media):
    ds = make(video_samples(media, missing=True), train=False, label_to_id={"jumping": 0, "running": 1})
    item = ds[2]
    assert set(item) == KEYS and item["valid"] is False and item["bad"] == [media["missing"]]
    assert item["index"] == 2 and item["label"] == 1 and torch.count_nonzero(item["pixels"]) == 0
    assert item["pixels"].shape == ds[0]["pixels"].shape


def test_multi_view_dataset(media):
    ds = MultiViewDataset(
        video_samples(media),
        temporal_views=2,
        spatial_views=3,
        num_frames=4,
        transform=ClipTransform(16, train=False),
    )
    items = [ds[k] for k in range(len(ds))]
    assert len(ds) == 12 and [x["index"] for x in items] == [0] * 6 + [1] * 6
    assert all(x["pixels"].shape == (3, 4, 16, 16) for x in items)
    distinct = {tuple(x["pixels"].flatten()[:64].tolist()) for x in items[:6]}
    assert len(distinct) == 6  # 2 temporal x 3 spatial views of one video all differ


class FakeTokenizer:
    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        assert padding and truncation and return_tensors == "pt"
        lengths = [min(len(t.split()) + 2, max_length) for t in texts]
        ids = torch.zeros(len(texts), max(lengths), dtype=torch.long)
        for row, n in enumerate(lengths):
            ids[row, :n] = 1
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def test_collate_schema(media):
    ds = make(
        video_samples(media, missing=True),
        train=False,
        text="label",
        label_to_id={"jumping": 0, "running": 1},
    )
    batch = Collator(FakeTokenizer(), max_length=6)([ds[i] for i in range(3)])
    assert batch["pixels"].shape == (3, 3, 4, 16, 16) and batch["pixels"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, 6)
    assert batch["labels"].tolist() == [0, 1, 1] and batch["index"].tolist() == [0, 1, 2]
    assert batch["valid"].tolist() == [True, True, False] and batch["valid"].dtype == torch.bool
    assert batch["text_hash"][1] == batch["text_hash"][2] != batch["text_hash"][0]  # same label, same text
    assert batch["bad"] == [media["missing"]] and batch["text"][0] == "a video of a person jumping."
    assert text_hash("  A Cat ") == text_hash("a cat") != text_hash("a dog")
    assert set(Collator(None)([ds[0]])) == {"pixels", "labels", "index", "valid", "text_hash", "text", "bad"}


def test_collate_with_the_default_text_tokenizer(media):
    transformers = pytest.importorskip("transformers")
    from videovl.config import TextConfig, resolve_path

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_path(TextConfig().model))
    except Exception as e:  # the package ships the tokenizer files; without it there is nothing to test
        pytest.skip(f"default tokenizer unavailable: {e}")
    items = [make(video_samples(media))[i] for i in range(2)]
    items[1]["text"] = "a much longer caption " * 20
    batch = Collator(tokenizer, max_length=12)(items)
    assert batch["input_ids"].shape == (2, 12) and batch["attention_mask"][0].sum() < 12
    assert batch["attention_mask"][1].sum() == 12  # truncated to max_length


def test_loader_arguments():
    with pytest.raises(ValueError, match="batch_sampler"):
        build_loader([1, 2], batch_sampler=[[0, 1]], batch_size=2, collate_fn=list)
    with pytest.raises(ValueError, match="batch_size"):
        build_loader([1, 2], collate_fn=list)
    assert list(build_loader([1, 2, 3], batch_size=2, collate_fn=list)) == [[1, 2], [3]]


def test_loader_workers_give_the_items_of_the_main_process(media):
    ds = make(video_samples(media))
    sampler = WeightedBatchSampler([2], [1.0], batch_size=2, seed=1)
    loader = build_loader(ds, batch_sampler=sampler, collate_fn=Collator(None), num_workers=1)
    assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    got = [batch for batch, _ in zip(loader, range(3), strict=False)]
    for step, batch in enumerate(got):
        draws = [Draw(int(r), step, k) for k, r in enumerate(sampler.global_batch(step))]
        assert batch["text"] == [ds[d]["text"] for d in draws]
        torch.testing.assert_close(
            batch["pixels"], torch.stack([ds[d]["pixels"] for d in draws]), rtol=0, atol=0
        )


def test_draw_concat_numbers_rows_across_parts(media):
    parts = [make(video_samples(media)), make([Sample(media["image"], "image", ["grey"])], index_offset=2)]
    both = DrawConcat(parts)
    assert len(both) == 3 and both[2]["text"] == "grey" and both[Draw(2, 7, 1)]["index"] == 2
    assert both[Draw(1, 7, 1)]["text"] == parts[0][Draw(1, 7, 1)]["text"]
    with pytest.raises(IndexError):
        both[Draw(3, 0, 0)]


def test_modality_order_is_rank_independent_and_follows_ratio():
    ranks = [[modality_order(s, 0.3, seed=11) for s in range(4000)] for _ in range(2)]
    assert ranks[0] == ranks[1]
    assert abs(ranks[0].count("video") / 4000 - 0.3) < 0.03
    assert {modality_order(s, 0.0, 1) for s in range(50)} == {"image"}
    assert {modality_order(s, 1.0, 1) for s in range(50)} == {"video"}


def test_mixed_batches_reiterate_and_resume():
    def loaders(rank):
        return {"video": [f"v{rank}-{k}" for k in range(3)], "image": [f"i{rank}-{k}" for k in range(2)]}

    runs = [loaders(r) for r in range(2)]
    streams = [list(zip(range(40), MixedBatches(ld, 0.5, seed=2), strict=False)) for ld in runs]
    mods = [[m for _, (m, _) in s] for s in streams]
    assert mods[0] == mods[1] == [modality_order(s, 0.5, 2) for s in range(40)]
    videos = [b for _, (m, b) in streams[0] if m == "video"]
    assert videos[:6] == ["v0-0", "v0-1", "v0-2"] * 2  # an exhausted loader starts over
    resumed = zip(MixedBatches(loaders(0), 0.5, seed=2, start_step=10), range(5), strict=False)
    assert [m for (m, _), _ in resumed] == mods[0][10:15]
    only = MixedBatches({"image": [1, 2]}, 0.9, seed=0)
    assert [m for (m, _), _ in zip(only, range(5), strict=False)] == ["image"] * 5
