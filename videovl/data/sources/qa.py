"""The question-answering record: one question about one video, with its answer and question type.

Every QA source (the ActivityNet-QA and MSRVTT-QA parsers, the demo corpus's QA splits) hands out this
record, so scoring and the answer vocabulary never need to know which benchmark a question came from.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QASample"]


@dataclass(frozen=True)
class QASample:
    question_id: str  # unique within a split; predictions are keyed by it
    video: str  # the media path (found under the video root, or where it is expected)
    question: str
    answer: str  # as annotated; scoring compares normalised forms
    qtype: str  # the benchmark's question type ("motion", "what", "order", ...)
    video_id: str = ""  # the benchmark's name for the video, shared by its questions
