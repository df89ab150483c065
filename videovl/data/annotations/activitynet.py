"""ActivityNet Captions paragraph-to-video retrieval.

The annotation (``train.json``, ``val_1.json``, ``val_2.json``) maps ``v_<youtube id>`` to ``duration``,
``timestamps`` ([start, end] seconds) and ``sentences``. For retrieval every video becomes one sample
whose single caption is all its sentences, sorted by start time, joined into a paragraph (val_1: 4917
videos). The original data has segments with start > end (swapped here) and segments ending after the
video (clamped to ``duration``); each repair is listed in the returned report, nothing is dropped.
Videos are looked up as ``v_<id>`` or ``<id>`` with .mp4, .mkv or .webm anywhere under ``video_root``.
"""

from __future__ import annotations

import json
from pathlib import Path

from videovl.data.annotations.report import AnnotationReport, index_files
from videovl.data.sources import Sample

__all__ = ["VIDEO_EXTENSIONS", "repair_segment", "read_activitynet"]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")
_NOISE = 1e-6  # ends like 55.150000000000006 for a 55.15 s video are float noise: clamped, not reported


def repair_segment(start: float, end: float, duration: float) -> tuple[float, float, list[str]]:
    """A segment inside ``[0, duration]`` with start <= end, and the list of repairs made."""
    fixes = []
    if start > end:
        start, end = end, start
        fixes.append("start > end: swapped")
    if start < 0:
        start = 0.0
        fixes.append("negative start: set to 0")
    if duration > 0 and end > duration:
        if end > duration + _NOISE:
            fixes.append(f"end {end} > duration {duration}: clamped")
        end, start = duration, min(start, duration)
    return start, end, fixes


def read_activitynet(
    json_path: str | Path, video_root: str | Path | None = None
) -> tuple[list[Sample], AnnotationReport]:
    """One paragraph sample per video, in file order; see the module docstring."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    report = AnnotationReport(f"ActivityNet Captions ({Path(json_path).name})")
    index = index_files(video_root)
    root = Path(video_root) if video_root is not None else Path()
    samples, sentences, swapped, clamped = [], 0, 0, 0
    for vid, ann in data.items():
        duration = float(ann["duration"])
        if len(ann["timestamps"]) != len(ann["sentences"]):
            counts = f"{len(ann['timestamps'])} timestamps for {len(ann['sentences'])} sentences"
            report.problems.append(f"{vid}: {counts}; the unmatched ones are unused")
        segments = []
        for k, ((start, end), sentence) in enumerate(zip(ann["timestamps"], ann["sentences"])):
            start, end, fixes = repair_segment(float(start), float(end), duration)
            for fix in fixes:
                report.problems.append(f"{vid} segment {k}: {fix}")
            swapped += any(f.startswith("start > end") for f in fixes)
            clamped += any("clamped" in f for f in fixes)
            segments.append((start, end, sentence.strip()))
        segments.sort(key=lambda seg: (seg[0], seg[1]))  # stable: ties keep annotation order
        sentences += len(segments)
        names = [f"{base}{ext}" for base in (vid, vid.removeprefix("v_")) for ext in VIDEO_EXTENSIONS]
        found = next((index[n] for n in names if n in index), None)
        if found is None and video_root is not None:
            report.missing.append(vid)
        paragraph = " ".join(s for _, _, s in segments if s)
        samples.append(
            Sample(
                found or str(root / f"{vid}.mp4"),
                "video",
                [paragraph],
                id=vid,
                extra={"duration": duration, "segments": [[s, e] for s, e, _ in segments]},
            )
        )
    report.counts = {"videos": len(samples), "sentences": sentences, "swapped": swapped, "clamped": clamped}
    if video_root is not None:
        report.counts["missing_videos"] = len(report.missing)
    return samples, report
