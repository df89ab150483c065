"""A stage's batches from its config, as the loop opens them: each draw a fresh view, a pure function of
the step (loader workers and resuming change nothing), label sources of both kinds in one stage."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_pretrain_args

from videovl.config import load_config
from videovl.data.collate import Collator
from videovl.train.data import build_stage_data, open_batches

# The demo's earlier recipe: its joint stage draws image and video batches, so both kinds are checked.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo_omnivl.yaml"


@pytest.fixture(scope="module")
def cfg(tiny_demo, tmp_path_factory):
    return load_config(DEMO_CONFIG, tiny_pretrain_args(tiny_demo, tmp_path_factory.mktemp("run"), stages=3))


def batches(cfg, stage, n, *, workers=0, start=0, neighbours=None):
    """``n`` batches of stage ``stage`` from micro-step ``start``: (modality, index, text, pixels)."""
    cfg.data.num_workers = workers
    data = build_stage_data(cfg, stage)
    it = open_batches(cfg, data, cfg.stages[stage], Collator(None), 5, start, 0, 1, neighbours)
    return [(m, b["index"].tolist(), b["text"], b["pixels"]) for m, b in (next(it) for _ in range(n))]


def assert_same(a, b):
    assert [x[:3] for x in a] == [x[:3] for x in b]
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x[3], y[3], rtol=0, atol=0)


def test_loader_workers_0_and_2_give_identical_batches(cfg):
    assert_same(batches(cfg, 1, 6, workers=0), batches(cfg, 1, 6, workers=2))


def test_stop_and_resume_equals_a_straight_run(cfg):
    straight = batches(cfg, 1, 8)
    assert_same(batches(cfg, 1, 3, start=5), straight[5:])
    assert {m for m, *_ in straight} == {"video", "image"}


def views_of_rows(run):
    seen: dict[int, set[str]] = {}
    for _, index, texts, _ in run:
        for i, text in zip(index, texts, strict=True):
            seen.setdefault(i, set()).add(text)
    return seen


def test_rows_drawn_again_are_seen_through_other_captions(cfg):
    """Demo training rows hold several paraphrases: a row drawn in several steps shows more than one."""
    seen = views_of_rows(batches(cfg, 2, 30))  # the video-only stage, 8 of 64 rows a step
    again = [texts for texts in seen.values() if len(texts) > 1]
    assert len(again) >= len(seen) // 4
    rng = np.random.default_rng(0)
    neighbours = rng.integers(0, 64, size=(64, 4))  # a mined table: batches from neighbourhoods
    mined = views_of_rows(batches(cfg, 2, 30, neighbours=neighbours))
    assert sum(len(texts) > 1 for texts in mined.values()) >= len(mined) // 4


def test_a_stage_mixes_manifest_and_shard_label_sources(cfg, tmp_path):
    from tools import make_shards

    manifest = Path(cfg.data.demo_root) / "video_train.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[:16]]
    for row in rows:
        row["video"] = str(manifest.parent / row["video"])
    half = tmp_path / "half.jsonl"
    half.write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_shards.main([str(half), str(tmp_path / "shards"), "--samples-per-shard", "8"])
    mixed = load_config(DEMO_CONFIG, [
        *tiny_pretrain_args(Path(cfg.data.demo_root), tmp_path / "run", stages=3),
        "stages.2.sources=[{manifest: demo:video_train.jsonl, kind: video-label}, "
        f"{{shards: '{tmp_path}/shards/{{00000..00001}}.tar', kind: video-label}}]",
    ])  # fmt: skip
    run = batches(mixed, 2, 6)
    labels = {}
    for _, b in zip(range(6), open_batches(mixed, build_stage_data(mixed, 2), mixed.stages[2],
                                           Collator(None), 5, 0, 0, 1), strict=False):  # fmt: skip
        for text, label in zip(b[1]["text"], b[1]["labels"].tolist(), strict=True):
            labels.setdefault(text, set()).add(label)
    assert all(len(ids) == 1 for ids in labels.values())  # a label is one id in either kind of source
    indices = {i for _, index, _, _ in run for i in index}
    assert min(indices) < 64 <= max(indices)  # both sources drawn
