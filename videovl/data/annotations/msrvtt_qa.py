"""MSRVTT-QA (Xu et al. 2017) in the VindLU / LAVIS JSON layout, and any question file written that way.

A question file is a JSON list (``.json``) or JSON Lines (``.jsonl``) of ``{video, question, answer,
question_id}``; ``question_id`` may be absent (the row's position is used) and an optional ``type`` names
the question type (the demo corpus's QA splits carry one). Without ``type``, the type is the question's
first word, as MSRVTT-QA reports it (:data:`MSRVTT_QA_TYPES`: what, who, how, when, where; anything else is
``other``). The answer-list file is a JSON list of answer strings (VindLU's ``msrvtt_qa_answer_list.json``,
LAVIS's ``answer_list.json``): the closed list that ranking scores over. Answers outside it (compared after
normalisation) are counted and listed, and kept: they are scored, and always wrong under ranking.

``video`` is relative to ``video_root`` (default: the question file's folder). With ``video_root`` given,
absent videos are counted and listed and their questions kept, for the evaluator to leave out. Rows that
lack a field, or repeat a question id, are listed in the report and left out; an empty file gives no
questions and says so, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videovl.data.annotations.report import AnnotationReport
from videovl.data.answers import AnswerVocab
from videovl.data.sources import QASample

__all__ = ["MSRVTT_QA_TYPES", "question_type", "read_answer_list", "read_qa_rows", "read_msrvtt_qa"]

MSRVTT_QA_TYPES = ("what", "who", "how", "when", "where")
_REQUIRED = ("video", "question", "answer")


def question_type(question: str) -> str:
    """MSRVTT-QA's question type: the first word if it is one of :data:`MSRVTT_QA_TYPES`, else ``other``."""
    words = question.strip().lower().split()
    return words[0] if words and words[0] in MSRVTT_QA_TYPES else "other"


def read_answer_list(path: str | Path) -> list[str]:
    """The answer strings of an answer-list file (a JSON list of strings), in file order."""
    try:
        answers = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"answer list {path}: cannot read it as JSON ({err})") from err
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"answer list {path}: expected a JSON list of answer strings")
    return answers


def read_qa_rows(path: str | Path) -> list[Any]:
    """The rows of a question file: a JSON list, or JSON Lines (one object a line; blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            try:
                rows += [json.loads(line)] if line.strip() else []
            except ValueError as err:
                raise ValueError(f"question file {path}:{n}: not valid JSON ({err})") from err
        return rows
    try:
        rows = json.loads(text) if text.strip() else []
    except ValueError as err:
        raise ValueError(f"question file {path}: not valid JSON ({err})") from err
    if not isinstance(rows, list):
        raise ValueError(
            f"question file {path}: expected a JSON list of questions, got {type(rows).__name__}"
        )
    return rows


def read_msrvtt_qa(
    path: str | Path, video_root: str | Path | None = None, *, answer_list: str | Path | None = None
) -> tuple[list[QASample], AnnotationReport]:
    """The questions of one file, in file order; see the module docstring."""
    path = Path(path)
    rows = read_qa_rows(path)
    report = AnnotationReport(f"MSRVTT-QA layout ({path.name})")
    root = Path(video_root) if video_root is not None else path.parent
    samples, seen = [], set()
    for k, row in enumerate(rows):
        where = f"{path.name} row {k}"
        if not isinstance(row, dict) or any(not isinstance(row.get(f), str) for f in _REQUIRED):
            report.problems.append(f"{where}: needs string fields {list(_REQUIRED)}; left out")
            continue
        qid = str(row.get("question_id", k))
        if qid in seen:
            report.problems.append(f"{where}: question_id {qid} repeats; left out")
            continue
        seen.add(qid)
        question = row["question"].strip()
        qtype = str(row["type"]) if row.get("type") is not None else question_type(question)
        video = row["video"]
        samples.append(
            QASample(qid, str(root / video), question, row["answer"].strip(), qtype, video_id=video)
        )
    if not samples:
        report.problems.append(f"{path.name}: no questions")
    report.counts = {"questions": len(samples), "videos": len({s.video_id for s in samples})}
    if answer_list is not None:
        vocab = AnswerVocab.load(answer_list)
        outside = [s for s in samples if s.answer not in vocab]
        report.problems += [
            f"{s.question_id}: answer '{s.answer}' is not in the answer list" for s in outside
        ]
        report.counts |= {"answer_list": len(vocab), "answers_outside_list": len(outside)}
    if video_root is not None:
        videos = dict.fromkeys(s.video for s in samples)
        report.missing = [v for v in videos if not Path(v).is_file()]
        absent = set(report.missing)
        report.counts["missing_videos"] = len(absent)
        report.counts["questions_without_video"] = sum(s.video in absent for s in samples)
    return samples, report
