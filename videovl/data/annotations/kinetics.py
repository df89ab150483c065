"""Kinetics-400 action recognition annotations.

CSV rows ``label,youtube_id,time_start,time_end,split[,is_cc]`` (the CVDF layout; the older DeepMind
layout has no ``is_cc``). Clips are named ``{youtube_id}_{start:06d}_{end:06d}.mp4`` and may sit in
class folders; an untrimmed ``{youtube_id}.mp4`` is used with the annotated window. The 400-class map
comes from ``label_map_k400.txt`` (one name a line, line index = id) or ``kinetics_400_labels.csv``
(``id,name``). Kinetics downloads are never complete: absent clips are counted and listed in the report
and left out of the samples (``drop_missing=False`` keeps them for the dataset to report).
"""

from __future__ import annotations

import csv
from pathlib import Path

from videovl.data.annotations.report import AnnotationReport, index_files
from videovl.data.sources import Sample

__all__ = ["REQUIRED_COLUMNS", "clip_name", "read_label_map", "read_kinetics"]

REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
_EXTENSIONS = (".mp4", ".mkv", ".webm")


def clip_name(youtube_id: str, start: int, end: int, ext: str = ".mp4") -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}{ext}"


def read_label_map(path: str | Path) -> dict[str, int]:
    """Class name -> id from a ``.txt`` (line index = id) or an ``id,name`` ``.csv``."""
    path = Path(path)
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or {"id", "name"} - set(rows[0]):
            raise ValueError(f"{path}: expected a csv with columns 'id,name'")
        mapping = {row["name"].strip(): int(row["id"]) for row in rows}
    else:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        mapping = {name: i for i, name in enumerate(names)}
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise ValueError(f"{path}: class ids must be 0..{len(mapping) - 1} with unique names")
    return mapping


def read_kinetics(
    csv_path: str | Path,
    video_root: str | Path | None = None,
    *,
    label_map: dict[str, int] | None = None,
    drop_missing: bool = True,
) -> tuple[list[Sample], AnnotationReport]:
    """Samples of one annotation csv; without ``video_root`` no file is checked and paths are relative."""
    csv_path = Path(csv_path)
    report = AnnotationReport(f"Kinetics ({csv_path.name})")
    index = index_files(video_root)
    root = Path(video_root) if video_root is not None else Path()
    samples, unknown = [], 0
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(
                f"{csv_path}: columns {absent} missing; expected {','.join(REQUIRED_COLUMNS)}[,is_cc]"
            )
        for line, row in enumerate(reader, 2):
            label, yid = row["label"].strip(), row["youtube_id"].strip()
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            if label_map is not None and label not in label_map:
                report.problems.append(
                    f"{csv_path.name}:{line}: label '{label}' not in the label map; skipped"
                )
                unknown += 1
                continue
            extra = {"split": row["split"], "time_start": start, "time_end": end}
            if row.get("is_cc") not in (None, ""):
                extra["is_cc"] = int(row["is_cc"])
            trimmed = next(
                (index[n] for ext in _EXTENSIONS if (n := clip_name(yid, start, end, ext)) in index), None
            )
            full = next((index[n] for ext in _EXTENSIONS if (n := f"{yid}{ext}") in index), None)
            sample = Sample(str(root / clip_name(yid, start, end)), "video", label=label, id=yid, extra=extra)
            if trimmed:
                sample.path = trimmed
            elif full:  # an untrimmed download: decode only the annotated window
                sample.path, sample.start, sample.end = full, float(start), float(end)
            elif video_root is not None:
                report.missing.append(clip_name(yid, start, end))
                if drop_missing:
                    continue
            samples.append(sample)
    report.counts = {
        "clips": len(samples),
        "classes": len({s.label for s in samples}),
        "unknown_labels": unknown,
    }
    if video_root is not None:
        report.counts["missing_clips"] = len(report.missing)
    return samples, report
