"""MSR-VTT text-to-video retrieval: the 1k-A test split and the 9k / 7k training lists.

Files (the CLIP4Clip layout): ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``, 1000
clips with one caption each), ``MSRVTT_train.9k.csv`` / ``MSRVTT_train.7k.csv`` (one ``video_id``
column) and ``MSRVTT_data.json`` (the official annotation, whose ``sentences`` hold about 20 captions per
video). Videos are ``{video_root}/{video_id}.mp4``.

Validation: rather than choosing checkpoints on the test set, :func:`split_validation` holds out
``num_val`` training videos: the training ids sorted by number, permuted by ``numpy.random.default_rng
(seed)``, and the last ``num_val`` of that order become validation. The split depends only on the list,
``num_val`` and ``seed``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from videovl.data.annotations.report import AnnotationReport, index_files
from videovl.data.sources import Sample

__all__ = [
    "read_msrvtt_test",
    "read_msrvtt_ids",
    "split_validation",
    "read_msrvtt_captions",
    "read_msrvtt_train",
]


def _video_number(video_id: str) -> int:
    return int(video_id.removeprefix("video"))


def _check_files(samples: list[Sample], video_root: str | Path | None, report: AnnotationReport) -> None:
    if video_root is None:
        return
    index = index_files(video_root)
    report.missing = [s.path for s in samples if os.path.basename(s.path) not in index]
    report.counts["missing_videos"] = len(report.missing)


def read_msrvtt_test(
    csv_path: str | Path, video_root: str | Path | None = None
) -> tuple[list[Sample], AnnotationReport]:
    """The 1k-A test split: one sample per row (1000 clips, one caption each), in file order."""
    report = AnnotationReport(f"MSR-VTT 1k-A test ({csv_path})")
    root = Path(video_root) if video_root is not None else Path()
    samples = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            vid = row["video_id"].strip()
            samples.append(Sample(str(root / f"{vid}.mp4"), "video", [row["sentence"].strip()], id=vid))
    report.counts["clips"] = len(samples)
    _check_files(samples, video_root, report)
    return samples, report


def read_msrvtt_ids(csv_path: str | Path) -> list[str]:
    """Video ids of a training list (``MSRVTT_train.9k.csv`` or ``.7k.csv``), in file order."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [row["video_id"].strip() for row in csv.DictReader(f)]


def split_validation(ids: list[str], num_val: int = 500, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) ids: see the module docstring. Both come back sorted by video number."""
    if not 0 <= num_val < len(ids):
        raise ValueError(f"num_val must be in [0, {len(ids)}) for {len(ids)} training ids, got {num_val}")
    order = sorted(set(ids), key=_video_number)
    perm = np.random.default_rng(seed).permutation(len(order))
    val = {order[k] for k in perm[len(order) - num_val :]}
    return [v for v in order if v not in val], [v for v in order if v in val]


def read_msrvtt_captions(json_path: str | Path) -> dict[str, list[str]]:
    """video id -> its captions, from the official ``MSRVTT_data.json``."""
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: MSR-VTT training captions come from MSRVTT_data.json (the official "
            "annotation with a 'sentences' list, distributed with the CLIP4Clip MSR-VTT data); the 1k-A "
            "test split needs only MSRVTT_JSFUSION_test.csv"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if "sentences" not in data:
        raise ValueError(f"{path} has no 'sentences' list; is it MSRVTT_data.json? keys: {sorted(data)[:5]}")
    captions: dict[str, list[str]] = {}
    for item in data["sentences"]:
        captions.setdefault(item["video_id"], []).append(item["caption"].strip())
    return captions


def read_msrvtt_train(
    list_csv: str | Path,
    data_json: str | Path,
    video_root: str | Path | None = None,
    *,
    split: str = "train",
    num_val: int = 500,
    seed: int = 0,
) -> tuple[list[Sample], AnnotationReport]:
    """Training (``split="train"``) or held-out validation (``"val"``) samples of a training list, each
    with all its captions. Ids without captions are skipped and reported."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    captions = read_msrvtt_captions(data_json)
    train_ids, val_ids = split_validation(read_msrvtt_ids(list_csv), num_val, seed)
    ids = train_ids if split == "train" else val_ids
    report = AnnotationReport(f"MSR-VTT {split} ({Path(list_csv).name}, {num_val} held out, seed {seed})")
    root = Path(video_root) if video_root is not None else Path()
    samples = []
    for vid in ids:
        if not captions.get(vid):
            report.problems.append(f"{vid}: no captions in {data_json}; skipped")
            continue
        samples.append(Sample(str(root / f"{vid}.mp4"), "video", captions[vid], id=vid))
    report.counts |= {"videos": len(samples), "captions": sum(len(s.captions) for s in samples)}
    _check_files(samples, video_root, report)
    return samples, report
