"""Evaluation metrics: retrieval (chunked), action recognition, captioning (pycocoevalcap) and question
answering."""

from videovl.eval.captioning import score_captions
from videovl.eval.classification import (
    average_views,
    classification_metrics,
    mean_class_accuracy,
    order_pair_accuracy,
    order_partners,
    topk_accuracy,
)
from videovl.eval.qa import (
    QA_PROTOCOLS,
    choose_answers,
    normalize_answer,
    qa_accuracy,
    shortlist_answers,
    unanswered_questions,
)
from videovl.eval.retrieval import (
    rank_metrics,
    rerank_topk,
    retrieval_metrics,
    retrieval_ranks,
    similarity_chunks,
)

__all__ = [
    "QA_PROTOCOLS",
    "average_views",
    "choose_answers",
    "classification_metrics",
    "mean_class_accuracy",
    "normalize_answer",
    "order_pair_accuracy",
    "order_partners",
    "qa_accuracy",
    "rank_metrics",
    "rerank_topk",
    "retrieval_metrics",
    "retrieval_ranks",
    "score_captions",
    "shortlist_answers",
    "similarity_chunks",
    "topk_accuracy",
    "unanswered_questions",
]
