"""Question-answering metrics: accuracy per protocol and question type, and the closed-list ranking steps.

The published protocols differ, so every figure is labelled with the one that produced it:

- ``qa/rank``: rank a closed answer list with a generative decoder (VindLU, UMT, mPLUG-2): the ``k``
  answers (default 128) whose first token is likeliest form a shortlist (:func:`shortlist_answers`), and
  the shortlisted answer with the highest full likelihood is the prediction (:func:`choose_answers`);
- ``qa/generate``: free generation (greedy or beam), exact match after normalisation (VALOR);
- ``qa/classify``: a classifier over the top-N training answers (ClipBERT, ALPRO).

An answer is right when its normalised form (:func:`~videovl.data.answers.normalize_answer`) equals the
annotation's. A question without a prediction counts as wrong and is counted (``unanswered``), and
predictions for ids that no question has are counted too (``unknown_ids``: usually ids of another type,
``3`` against ``"3"`` is handled, ``"v_3"`` against ``"3"`` is not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from videovl.data.answers import normalize_answer
from videovl.data.sources import QASample

__all__ = [
    "QA_PROTOCOLS",
    "normalize_answer",
    "qa_accuracy",
    "unanswered_questions",
    "shortlist_answers",
    "choose_answers",
]

QA_PROTOCOLS = ("rank", "generate", "classify")


def _protocol(protocol: str) -> str:
    if protocol not in QA_PROTOCOLS:
        raise ValueError(f"QA protocol must be one of {QA_PROTOCOLS}, got {protocol!r}")
    return protocol


def unanswered_questions(predictions: Mapping[object, str], samples: Sequence[QASample]) -> list[str]:
    """The ids of the questions in ``samples`` that ``predictions`` has no answer for, in sample order."""
    given = {str(k) for k in predictions}
    return [s.question_id for s in samples if s.question_id not in given]


def qa_accuracy(
    predictions: Mapping[object, str], samples: Sequence[QASample], protocol: str = "rank"
) -> dict[str, float]:
    """Accuracy (percent) overall and per question type, labelled with ``protocol``.

    Keys: ``qa/{protocol}/acc``, ``qa/{protocol}/acc/{type}`` for each type present (sorted by name),
    ``qa/{protocol}/questions``, ``qa/{protocol}/unanswered`` (questions without a prediction, counted
    wrong) and ``qa/{protocol}/unknown_ids`` (predictions for no question). With no questions the
    accuracies are NaN, not an error.
    """
    prefix = f"qa/{_protocol(protocol)}"
    answers = {str(k): normalize_answer(v) for k, v in predictions.items()}
    right: dict[str, list[bool]] = {}
    for s in samples:
        pred = answers.get(s.question_id)
        right.setdefault(s.qtype, []).append(pred is not None and pred == normalize_answer(s.answer))
    every = [r for rows in right.values() for r in rows]
    acc = lambda rows: 100.0 * sum(rows) / len(rows) if rows else float("nan")
    known = {s.question_id for s in samples}
    out = {f"{prefix}/acc": acc(every)}
    out |= {f"{prefix}/acc/{t}": acc(right[t]) for t in sorted(right)}
    out |= {
        f"{prefix}/questions": float(len(every)),
        f"{prefix}/unanswered": float(sum(s.question_id not in answers for s in samples)),
        f"{prefix}/unknown_ids": float(sum(k not in known for k in answers)),
    }
    return out


def shortlist_answers(first_token_logprobs: Tensor, k: int = 128) -> Tensor:
    """(Q, A) log-probability of each answer's first token for each question -> (Q, min(k, A)) answer
    indices, best first; equal scores keep the lower answer index first (a stable sort, so the shortlist
    does not depend on the device's top-k tie order)."""
    if first_token_logprobs.ndim != 2 or k < 1:
        raise ValueError(
            f"shortlist_answers: expected (questions, answers) scores and k >= 1, got shape "
            f"{tuple(first_token_logprobs.shape)} and k={k}"
        )
    order = torch.sort(first_token_logprobs, dim=1, descending=True, stable=True).indices
    return order[:, : min(k, first_token_logprobs.shape[1])]


def choose_answers(shortlist: Tensor, answer_loglik: Tensor) -> Tensor:
    """(Q, k) shortlisted answer indices and (Q, k) full log-likelihood of each -> (Q,) chosen answer
    index: the likeliest; on a tie the one earlier in the shortlist (the better first token)."""
    if shortlist.shape != answer_loglik.shape or shortlist.ndim != 2:
        raise ValueError(
            f"choose_answers: shortlist {tuple(shortlist.shape)} and log-likelihoods "
            f"{tuple(answer_loglik.shape)} must be the same (questions, k) shape"
        )
    best = answer_loglik.argmax(dim=1, keepdim=True)  # argmax returns the first of equal maxima
    return shortlist.gather(1, best).squeeze(1)
