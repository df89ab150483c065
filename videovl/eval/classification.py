"""Action-recognition metrics: top-k accuracy, mean class accuracy and multi-view averaging.

A prediction counts as correct at ``k`` when fewer than ``k`` classes score *strictly* higher than the
true class: the same optimistic tie rule as the retrieval ranks, and deterministic (``topk`` breaks ties
arbitrarily). With continuous scores ties are rare; a warning flags more than 1% of samples tied.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = [
    "average_views",
    "topk_accuracy",
    "mean_class_accuracy",
    "classification_metrics",
    "order_partners",
    "order_pair_accuracy",
]


def _ranks(scores: Tensor, labels: Tensor) -> Tensor:
    """(N, K) scores, (N,) labels -> (N,) 1-based rank of the true class."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be (N, K) and labels (N,); got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < scores.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {scores.shape[1]}); got [{int(labels.min())}, {int(labels.max())}]"
        )
    true = scores.gather(1, labels.long()[:, None])  # (N, 1)
    tied = int(((scores == true).sum(1) > 1).sum())
    if tied > 0.01 * len(labels):  # float32 scores tie by chance now and then; many ties mean collapse
        msg = f"{tied} of {len(labels)} samples tie another class at the true class's score"
        warnings.warn(msg + "; ties count as correct (optimistic)", stacklevel=3)
    return 1 + (scores > true).sum(1)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """``{"action/top1": ..., "action/top5": ...}`` in percent (top-k with k >= K is 100)."""
    ranks = _ranks(scores, labels)
    return {f"action/top{k}": float(100 * (ranks <= k).double().mean()) for k in ks}


def mean_class_accuracy(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """``{"action/mean_class_acc"}``: top-1 accuracy per class, averaged over the classes present in
    ``labels`` (percent); robust to class imbalance, unlike top-1."""
    correct = (_ranks(scores, labels) == 1).double()
    classes, index = labels.long().unique(return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.double).index_add_(0, index, correct)
    per_class /= torch.bincount(index, minlength=len(classes)).double()
    return {"action/mean_class_acc": float(100 * per_class.mean())}


def classification_metrics(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies and mean class accuracy in one flat dict."""
    return topk_accuracy(scores, labels, ks) | mean_class_accuracy(scores, labels)


def order_partners(classes: list[str] | tuple[str, ...]) -> dict[int, list[int]]:
    """Class id -> the ids of the classes whose names hold the same words in another order ("left then
    up" and "up then left"; Something-Something's "pushing something from left to right" and "... from
    right to left"). Only classes that have such a partner appear."""
    by_words: dict[tuple[str, ...], list[int]] = {}
    for i, name in enumerate(classes):
        by_words.setdefault(tuple(sorted(name.lower().split())), []).append(i)
    return {i: [j for j in ids if j != i] for ids in by_words.values() if len(ids) > 1 for i in ids}


def order_pair_accuracy(
    scores: Tensor, labels: Tensor, classes: list[str] | tuple[str, ...]
) -> dict[str, float]:
    """How often a sample's true class scores strictly above every class named by the same words in
    another order (:func:`order_partners`), over the samples whose class has such a partner, in percent
    (chance 50 % for pairs): word order alone separates those classes, so a model that reads words as a
    bag, or frames as a set, sits at chance. Empty when no class has a partner."""
    partners = order_partners(classes)
    rows = [i for i, y in enumerate(labels.tolist()) if y in partners]
    if not rows:
        return {}
    correct = [bool((scores[i, labels[i]] > scores[i, partners[int(labels[i])]]).all()) for i in rows]
    return {
        "action/order_pair_acc": 100.0 * sum(correct) / len(rows),
        "action/order_pair_samples": float(len(rows)),
    }


def average_views(
    scores: Tensor, *, num_views: int | None = None, video_ids: Tensor | None = None, softmax: bool = True
) -> Tensor:
    """Average the scores of several views (temporal clips x spatial crops) of each video -> (N, K).

    Either ``num_views``: ``scores`` is (N * V, K) with each video's V views consecutive; or ``video_ids``
    (M,): views are grouped by id, any order and count, and rows come out in ascending id order
    (``video_ids.unique()``). With ``softmax`` (default) each view's logits become probabilities first, as
    in SlowFast / MViT testing, so one over-confident view cannot outvote the rest; pass ``softmax=False``
    for scores that are already probabilities.

    Float64 throughout: in float32 a class more than about 100 logits below the best one has probability
    exactly 0, so a confidently wrong clip would tie its true class with every other unlikely class and
    the optimistic tie rule would count it correct at top-5. Float64 keeps them apart up to about 700.
    """
    probs = scores.double().softmax(-1) if softmax else scores.double()
    if (num_views is None) == (video_ids is None):
        raise ValueError("average_views needs exactly one of num_views (consecutive views) or video_ids")
    if num_views is not None:
        if probs.shape[0] % num_views:
            raise ValueError(
                f"{probs.shape[0]} rows are not a whole number of videos of num_views={num_views}"
            )
        return probs.unflatten(0, (-1, num_views)).mean(1)  # (N * V, K) -> (N, V, K) -> (N, K)
    _, index = video_ids.unique(return_inverse=True)
    sums = probs.new_zeros(int(index.max()) + 1, probs.shape[1]).index_add_(0, index, probs)
    return sums / torch.bincount(index)[:, None].to(probs.dtype)
