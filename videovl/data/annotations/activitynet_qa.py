"""ActivityNet-QA (Yu et al. 2019): open-ended questions on ActivityNet videos.

Each split is two files (the MILVLG/activitynet-qa ``dataset/`` layout): ``{split}_q.json``, a list of
``{video_name, question, question_id}``, and ``{split}_a.json``, a list of ``{answer, type, question_id}``,
joined here on ``question_id`` (train 32,000 questions on 3,200 videos, val 18,000 on 1,800, test 8,000 on
800). ``type`` 0-2 are the question kinds motion, spatial and temporal relation; 3-8 are "free" questions
named by their answer: yes/no, colour, object, location, number, other (:data:`QA_TYPES`, in code order;
"yes/no" is spelled ``yes_no`` so it can sit in a metric key such as ``qa/rank/acc/yes_no``).
``video_name`` is the YouTube id; the file is looked up as ``v_<id>`` or ``<id>`` with .mp4, .mkv or .webm
anywhere under ``video_root``. A question or answer without its partner, a repeated id or an unknown type
is listed in the report and the question left out; questions whose video is absent are kept (the
evaluator leaves them out), and the absent videos are counted and listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videovl.data.annotations.activitynet import VIDEO_EXTENSIONS
from videovl.data.annotations.report import AnnotationReport, index_files
from videovl.data.sources import QASample

__all__ = ["QA_TYPES", "SPLITS", "read_activitynet_qa"]

QA_TYPES = ("motion", "spatial", "temporal", "yes_no", "colour", "object", "location", "number", "other")
SPLITS = ("train", "val", "test")


def _load_list(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"ActivityNet-QA: {path} does not exist; pass the folder holding {{train,val,test}}_q.json and "
            "_a.json (MILVLG/activitynet-qa dataset/)"
        )
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.strip() else []
    except ValueError as err:
        raise ValueError(f"ActivityNet-QA: {path} is not valid JSON ({err})") from err
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in rows):
        raise ValueError(f"ActivityNet-QA: {path} must be a JSON list of objects with keys {list(keys)}")
    return rows


def read_activitynet_qa(
    annotations: str | Path, split: str = "test", video_root: str | Path | None = None
) -> tuple[list[QASample], AnnotationReport]:
    """The questions of ``split`` in question-file order; ``annotations`` is the folder of the six files."""
    if split not in SPLITS:
        raise ValueError(f"ActivityNet-QA split must be one of {SPLITS}, got {split!r}")
    folder = Path(annotations)
    questions = _load_list(folder / f"{split}_q.json", ("video_name", "question", "question_id"))
    answers = _load_list(folder / f"{split}_a.json", ("answer", "type", "question_id"))
    report = AnnotationReport(f"ActivityNet-QA {split} ({folder})")
    by_id: dict[str, dict[str, Any]] = {}
    for row in answers:
        qid = str(row["question_id"])
        if qid in by_id:
            report.problems.append(f"{split}_a.json: question_id {qid} answered twice; the first is used")
            continue
        by_id[qid] = row
    index = index_files(video_root)
    root = Path(video_root) if video_root is not None else Path()
    samples, seen, paths = [], set(), {}
    for row in questions:
        qid, vid = str(row["question_id"]), str(row["video_name"])
        if qid in seen:
            report.problems.append(f"{split}_q.json: question_id {qid} repeats; left out")
            continue
        seen.add(qid)
        ans = by_id.get(qid)
        if ans is None:
            report.problems.append(f"{qid}: no answer in {split}_a.json; left out")
            continue
        if not isinstance(ans["type"], int) or not 0 <= ans["type"] < len(QA_TYPES):
            report.problems.append(f"{qid}: unknown type {ans['type']!r} (expected 0..8); left out")
            continue
        if vid not in paths:
            names = [f"{base}{ext}" for base in (f"v_{vid}", vid) for ext in VIDEO_EXTENSIONS]
            found = next((index[n] for n in names if n in index), None)
            if found is None and video_root is not None:
                report.missing.append(vid)
            paths[vid] = found or str(root / f"v_{vid}.mp4")
        samples.append(
            QASample(
                qid,
                paths[vid],
                str(row["question"]).strip(),
                str(ans["answer"]).strip(),
                QA_TYPES[ans["type"]],
                video_id=vid,
            )  # fmt: skip
        )
    unasked = sorted(set(by_id) - seen)
    for qid in unasked:
        report.problems.append(f"{qid}: answered in {split}_a.json but not asked in {split}_q.json; unused")
    if not samples:
        report.problems.append(f"{split}: no questions")
    report.counts = {"questions": len(samples), "videos": len(paths)}
    if video_root is not None:
        absent = set(report.missing)
        report.counts["missing_videos"] = len(absent)
        report.counts["questions_without_video"] = sum(s.video_id in absent for s in samples)
    return samples, report
