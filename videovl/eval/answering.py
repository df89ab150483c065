"""Answering questions with a model's QA head: the closed-list ranking of ``qa/rank`` on the caption decoder.

The decoder reads the memory of :meth:`VideoLanguageModel.answer_memory` (the clip and the fused
question). Ranking is VindLU / UMT's: each answer's first token is scored once from ``[bos]``, the
``k`` best answers are shortlisted (:func:`~videovl.eval.qa.shortlist_answers`), and the shortlisted
answer whose whole token sequence (its tokens and the end token) is likeliest is chosen
(:func:`~videovl.eval.qa.choose_answers`). Answers are token sequences ``[bos] a1 ... an [eos] [pad]...``
as the data layer's collator writes them.

Benchmarks ask many questions about one clip (ActivityNet-QA ten, MSRVTT-QA a few): evaluation encodes
each distinct clip once and answers all its questions from that embedding (:func:`questions_by_clip`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from videovl.data.sources import QASample
from videovl.eval.qa import choose_answers, shortlist_answers

__all__ = ["first_token_logprobs", "answer_logliks", "rank_answers", "questions_by_clip"]


def questions_by_clip(questions: list[QASample]) -> tuple[list[str], list[list[int]]]:
    """The distinct clips of ``questions`` in order of first appearance, and for each the indices of its
    questions in ``questions`` order. A question names its clip by the video's path alone (a QA record
    has no start or end time: its clip is the whole video)."""
    asked: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        asked.setdefault(q.video, []).append(i)
    return list(asked), list(asked.values())


def first_token_logprobs(model, memory: Tensor, memory_mask: Tensor, first_tokens: Tensor) -> Tensor:
    """(Q, A): log p(first token of each answer | [bos], question Q's memory); ``first_tokens`` (A,)."""
    decoder = model.caption
    bos = torch.full((memory.shape[0], 1), decoder.bos_id, dtype=torch.long, device=memory.device)
    logits = decoder.next_token_logits(bos, memory, memory_mask)  # (Q, V)
    return F.log_softmax(logits.float(), -1)[:, first_tokens]


def answer_logliks(
    model,
    memory: Tensor,
    memory_mask: Tensor,
    answer_ids: Tensor,
    answer_mask: Tensor,
    candidates: Tensor,
    chunk_size: int = 512,
) -> Tensor:
    """(Q, k): the full log-likelihood of answer ``candidates[q, j]`` (an index into ``answer_ids`` (A, La))
    given question ``q``'s memory: the sum of its tokens' log-probabilities after [bos], the end token
    included, computed ``chunk_size`` (question, answer) pairs at a time."""
    questions, k = candidates.shape
    pair_q = torch.arange(questions, device=candidates.device).repeat_interleave(k)
    pair_a = candidates.flatten()
    out = []
    for q, a in zip(pair_q.split(chunk_size), pair_a.split(chunk_size), strict=True):
        ids, mask = answer_ids[a], answer_mask[a]
        logits = model.answer_logits(ids, mask, memory[q], memory_mask[q])  # (P, La, V)
        logp = F.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None]).squeeze(2)
        out.append((logp * mask[:, 1:]).sum(1))
    return torch.cat(out).view(questions, k)


def rank_answers(
    model, memory: Tensor, memory_mask: Tensor, answer_ids: Tensor, answer_mask: Tensor, k: int = 128
) -> Tensor:
    """(Q,) the index of the chosen answer of each question: the first-token shortlist of ``k``, then the
    likeliest full answer among them."""
    first = first_token_logprobs(model, memory, memory_mask, answer_ids[:, 1])
    shortlist = shortlist_answers(first, k)
    return choose_answers(
        shortlist, answer_logliks(model, memory, memory_mask, answer_ids, answer_mask, shortlist)
    )
