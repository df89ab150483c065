"""Question-answering scoring: answer normalisation, accuracy per protocol and type, closed-list ranking."""

import math

import pytest
import torch

from videovl.data.sources import QASample
from videovl.eval import (
    choose_answers,
    normalize_answer,
    qa_accuracy,
    shortlist_answers,
    unanswered_questions,
)


@pytest.mark.parametrize(
    "raw, want",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("  No!  ", "no"),
        ("The Man", "man"),
        ("a dog", "dog"),
        ("an apple tree", "apple tree"),
        ("Two", "2"),
        ("twenty-one", "21"),
        ("three dogs", "3 dogs"),
        ("1,000", "1000"),
        ("8.23 meters", "8.23 meters"),
        ("30+", "30"),
        ("T-shirt", "t shirt"),
        ("black/white", "black white"),
        ("dont know", "don't know"),
        ("Don\u2019t know", "don't know"),
        ("isnt", "isn't"),
        ("man's hat", "man's hat"),
        ("'red'", "red"),
        ("play (guitar)", "play guitar"),
        ("U.S.", "us"),
        ("none", "none"),
        ("ski   slope", "ski slope"),
    ],
)
def test_normalize_answer(raw, want):
    assert normalize_answer(raw) == want
    assert normalize_answer(want) == want  # idempotent


def _samples():
    rows = [("q0", "yes", "yes_no"), ("q1", "no", "yes_no"), ("q2", "2", "number"), ("q3", "red", "colour"),
            ("q4", "the dog", "object")]  # fmt: skip
    return [QASample(qid, f"{qid}.mp4", "?", answer, qtype) for qid, answer, qtype in rows]


def test_qa_accuracy_per_protocol_and_type():
    samples = _samples()
    predictions = {"q0": "Yes.", "q1": "yes", "q2": "two", "q4": "dog", "q9": "x"}  # q3 unanswered
    out = qa_accuracy(predictions, samples, "rank")
    assert out == {
        "qa/rank/acc": 60.0,
        "qa/rank/acc/colour": 0.0,
        "qa/rank/acc/number": 100.0,
        "qa/rank/acc/object": 100.0,
        "qa/rank/acc/yes_no": 50.0,
        "qa/rank/questions": 5.0,
        "qa/rank/unanswered": 1.0,
        "qa/rank/unknown_ids": 1.0,
    }
    assert unanswered_questions(predictions, samples) == ["q3"]
    assert set(qa_accuracy(predictions, samples, "classify")) == {k.replace("rank", "classify") for k in out}
    assert qa_accuracy({}, samples, "generate")["qa/generate/acc"] == 0.0
    ids = [QASample(str(i), "v.mp4", "?", "yes", "other") for i in range(3)]
    assert qa_accuracy({0: "yes", 1: "yes", 2: "no"}, ids)["qa/rank/acc"] == pytest.approx(200 / 3)
    empty = qa_accuracy({}, [], "rank")
    assert math.isnan(empty["qa/rank/acc"]) and empty["qa/rank/questions"] == 0
    with pytest.raises(ValueError, match="protocol"):
        qa_accuracy({}, samples, "vote")


def _naive_shortlist(scores: list[list[float]], k: int) -> list[list[int]]:
    return [sorted(range(len(row)), key=lambda a: (-row[a], a))[:k] for row in scores]


def _naive_choice(shortlist: list[list[int]], loglik: list[list[float]]) -> list[int]:
    chosen = []
    for ids, ll in zip(shortlist, loglik, strict=True):
        best = 0
        for j in range(1, len(ids)):
            if ll[j] > ll[best]:
                best = j
        chosen.append(ids[best])
    return chosen


@pytest.mark.parametrize("k", [1, 5, 128])
def test_ranking_against_a_naive_reference(k):
    gen = torch.Generator().manual_seed(k)
    # Rounded scores, so first-token and full-likelihood ties happen and their order is tested too.
    first = (torch.randn(37, 300, generator=gen) * 2).round() / 2
    shortlist = shortlist_answers(first, k)
    assert shortlist.shape == (37, min(k, 300)) and shortlist.dtype == torch.long
    assert shortlist.tolist() == _naive_shortlist(first.tolist(), k)
    full = (torch.randn(300, generator=gen) * 3).round()  # one full log-likelihood per answer
    loglik = full[shortlist]
    chosen = choose_answers(shortlist, loglik)
    assert chosen.tolist() == _naive_choice(shortlist.tolist(), loglik.tolist())
    # With the whole list shortlisted, ranking picks the answer of highest full likelihood.
    everything = shortlist_answers(first, 300)
    best = choose_answers(everything, full[everything])
    assert torch.equal(full[best], full.max().expand(37))


def test_ranking_shapes_and_errors():
    assert shortlist_answers(torch.zeros(2, 3), k=128).tolist() == [[0, 1, 2], [0, 1, 2]]
    with pytest.raises(ValueError, match="k=0"):
        shortlist_answers(torch.zeros(2, 3), k=0)
    with pytest.raises(ValueError, match="same"):
        choose_answers(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4))
