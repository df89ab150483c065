"""Evaluation metrics: retrieval (chunked), action recognition and captioning (pycocoevalcap)."""

from videovl.eval.captioning import score_captions
from videovl.eval.classification import (
    average_views,
    classification_metrics,
    mean_class_accuracy,
    order_pair_accuracy,
    order_partners,
    topk_accuracy,
)
from videovl.eval.retrieval import (
    rank_metrics,
    rerank_topk,
    retrieval_metrics,
    retrieval_ranks,
    similarity_chunks,
)

__all__ = [
    "average_views",
    "classification_metrics",
    "mean_class_accuracy",
    "order_pair_accuracy",
    "order_partners",
    "rank_metrics",
    "rerank_topk",
    "retrieval_metrics",
    "retrieval_ranks",
    "score_captions",
    "similarity_chunks",
    "topk_accuracy",
]
