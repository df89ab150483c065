"""Text-to-video and video-to-text retrieval metrics, computed in chunks of text queries.

Definitions (the ones CLIP4Clip and ALBEF report):

* t2v rank of a caption = 1 + number of videos scoring *strictly* higher than its own video. Ties are
  therefore resolved optimistically (as CLIP4Clip's ``np.where(sorted - diag == 0)`` does); a collapsed
  model whose scores are all equal would rank everything first, so a warning is raised when more than 1%
  of the captions tie (float32 scores tie by chance now and then).
* v2t rank of a video with several captions = rank of its best-ranked caption = 1 + number of captions
  (of any video) scoring strictly higher than the best of its own captions. Videos without a caption are
  left out of the v2t metrics.
* R@k in percent, MdR the median rank (mean of the two middle ranks for an even count, like ``np.median``),
  MnR the mean rank; ranks are 1-based.

No (Nt, Nv) matrix is ever held: scores come in (chunk_size, Nv) blocks of text queries, two passes over
them. Pass 1 keeps, per video, the best score among its own captions (and, with dual softmax, the column
log-sum-exp over all queries); pass 2 ranks each caption and counts, per video, the captions strictly above
that best. Peak memory is a few blocks (4096 x 100k float32 is 1.6 GB each: lower chunk_size to fit).

Dual softmax (DSL, Cheng et al. 2021) is an inference trick that looks at the whole query set: each cosine
score is multiplied by a softmax prior taken across all queries, ``s_ij * softmax_i(scale * s_ij)`` over
every text ``i`` for t2v (the column), and over every video for v2t (the row). Report it apart from the
plain dual-encoder numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "RankedQueries",
    "similarity_chunks",
    "retrieval_ranks",
    "rank_metrics",
    "retrieval_metrics",
    "top_hits",
    "rerank_topk",
]

# (start, stop) -> (stop - start, Nv) scores of text queries start..stop-1 against every video
ScoreFn = Callable[[int, int], Tensor]


def similarity_chunks(queries: Tensor, keys: Tensor, chunk_size: int) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, queries[start:start + chunk_size] @ keys.T)`` blocks in float32."""
    for start in range(0, queries.shape[0], chunk_size):
        yield start, queries[start : start + chunk_size].float() @ keys.float().t()


def _blocks(
    text_emb: Tensor | None,
    video_emb: Tensor | None,
    scores: Tensor | ScoreFn | None,
    n_text: int,
    chunk: int,
) -> Iterator[tuple[int, Tensor]]:
    if scores is None:
        if text_emb is None or video_emb is None:
            raise ValueError(
                "pass text_emb and video_emb, or scores (a tensor or a (start, stop) -> block callable)"
            )
        yield from similarity_chunks(text_emb, video_emb, chunk)
        return
    for start in range(0, n_text, chunk):
        stop = min(start + chunk, n_text)
        block = scores[start:stop] if isinstance(scores, Tensor) else scores(start, stop)
        yield start, block.float()


def _num_videos(video_emb: Tensor | None, scores: Tensor | ScoreFn | None, text_to_video: Tensor) -> int:
    if video_emb is not None:
        return video_emb.shape[0]
    if isinstance(scores, Tensor):
        return scores.shape[1]
    if scores is None:
        raise ValueError(
            "pass text_emb and video_emb, or scores (a tensor or a (start, stop) -> block callable)"
        )
    return scores(0, 1).shape[1]  # one query's row tells the number of videos


def retrieval_ranks(
    text_emb: Tensor | None,
    video_emb: Tensor | None,
    text_to_video: Tensor,
    *,
    chunk_size: int = 4096,
    dual_softmax: bool = False,
    dual_softmax_scale: float = 100.0,
    scores: Tensor | ScoreFn | None = None,
) -> tuple[Tensor, Tensor]:
    """1-based ranks ``(t2v (Nt,), v2t (Nv,))``; v2t is 0 for videos without a caption (see module doc).

    ``text_emb`` (Nt, D) and ``video_emb`` (Nv, D) are L2-normalised; ``text_to_video`` (Nt,) gives each
    caption's video. ``scores`` replaces the dot product: an (Nt, Nv) tensor, or a callable returning the
    block of text queries ``start:stop`` (e.g. frame-level matching), so it too is never held whole.
    """
    n_text, n_video = text_to_video.shape[0], _num_videos(video_emb, scores, text_to_video)
    if text_emb is not None and text_emb.shape[0] != n_text:
        raise ValueError(f"text_emb has {text_emb.shape[0]} rows but text_to_video has {n_text} entries")
    if n_text and not 0 <= int(text_to_video.min()) <= int(text_to_video.max()) < n_video:
        raise ValueError(
            f"text_to_video must index the {n_video} videos; got values in "
            f"[{int(text_to_video.min())}, {int(text_to_video.max())}]"
        )
    device = text_emb.device if text_emb is not None else getattr(scores, "device", torch.device("cpu"))
    gt = text_to_video.long().to(device)

    def blocks() -> Iterator[tuple[int, Tensor]]:
        for start, block in _blocks(text_emb, video_emb, scores, n_text, chunk_size):
            yield start, block.to(device)

    row_prior = lambda b: b * torch.softmax(dual_softmax_scale * b, 1) if dual_softmax else b

    best = torch.full((n_video,), float("-inf"), device=device)  # best v2t score among a video's captions
    col_lse = torch.full((n_video,), float("-inf"), device=device)  # per video: logsumexp_texts(scale * s)
    for start, block in blocks():
        rows = gt[start : start + block.shape[0]]
        if dual_softmax:
            col_lse = torch.logaddexp(col_lse, torch.logsumexp(dual_softmax_scale * block, 0))
        own = row_prior(block).gather(1, rows[:, None]).squeeze(1)  # (c,)
        best.scatter_reduce_(0, rows, own, "amax")

    t2v = torch.empty(n_text, dtype=torch.long, device=device)
    above = torch.zeros(n_video, dtype=torch.long, device=device)  # captions above each video's best one
    tied = 0
    for start, block in blocks():
        rows = gt[start : start + block.shape[0]]
        t2v_block = block * torch.exp(dual_softmax_scale * block - col_lse) if dual_softmax else block
        true = t2v_block.gather(1, rows[:, None])  # (c, 1)
        t2v[start : start + block.shape[0]] = 1 + (t2v_block > true).sum(1)
        tied += int(((t2v_block == true).sum(1) > 1).sum())
        above += (row_prior(block) > best).sum(0)
    if tied > 0.01 * n_text:  # float32 scores tie by chance now and then; many ties mean collapse
        warnings.warn(
            f"{tied} of {n_text} captions tie with another video at their own video's score; "
            "ties count in the caption's favour (optimistic ranks), so check the embeddings are "
            "not collapsed",
            stacklevel=2,
        )
    v2t = torch.where(torch.isinf(best), 0, 1 + above)
    return t2v.cpu(), v2t.cpu()


def rank_metrics(ranks: Tensor, prefix: str) -> dict[str, float]:
    """``{prefix}/R@1, R@5, R@10`` (percent), ``MdR``, ``MnR`` of 1-based ranks (entries <= 0 are skipped)."""
    r = ranks[ranks > 0].double().sort().values
    if r.numel() == 0:
        raise ValueError(f"no {prefix} query has a ground truth to rank")
    n = r.numel()
    out = {f"{prefix}/R@{k}": float(100 * (r <= k).double().mean()) for k in (1, 5, 10)}
    out[f"{prefix}/MdR"] = float((r[(n - 1) // 2] + r[n // 2]) / 2)
    out[f"{prefix}/MnR"] = float(r.mean())
    return out


def retrieval_metrics(
    text_emb: Tensor | None,
    video_emb: Tensor | None,
    text_to_video: Tensor,
    *,
    chunk_size: int = 4096,
    dual_softmax: bool = False,
    dual_softmax_scale: float = 100.0,
    scores: Tensor | ScoreFn | None = None,
) -> dict[str, float]:
    """Flat ``t2v/...`` and ``v2t/...`` metrics (see the module doc and :func:`retrieval_ranks`)."""
    t2v, v2t = retrieval_ranks(
        text_emb,
        video_emb,
        text_to_video,
        chunk_size=chunk_size,
        dual_softmax=dual_softmax,
        dual_softmax_scale=dual_softmax_scale,
        scores=scores,
    )
    return rank_metrics(t2v, "t2v") | rank_metrics(v2t, "v2t")


def top_hits(text_emb: Tensor, video_emb: Tensor, k: int, *, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Each query's ``k`` best videos by the dot product: ``(scores (Nt, k'), videos (Nt, k'))`` on the
    CPU, best first, k' = min(k, Nv). Computed a block of queries at a time, like the ranks."""
    k = min(k, video_emb.shape[0])
    scores = torch.empty(text_emb.shape[0], k)
    videos = torch.empty(text_emb.shape[0], k, dtype=torch.long)
    for start, block in similarity_chunks(text_emb, video_emb, chunk_size):
        top = block.topk(k, 1)
        scores[start : start + block.shape[0]] = top.values.cpu()
        videos[start : start + block.shape[0]] = top.indices.cpu()
    return scores, videos


@dataclass(frozen=True)
class RankedQueries:
    """What the dual encoder did with each text query, for pages a person reads: the query's own video,
    that video's rank (as :func:`retrieval_ranks`) and score, and the top ``k`` videos with their scores.
    Video numbers are whatever the caller's rows mean (the evaluator uses sample indices)."""

    texts: list[str]
    videos: Tensor  # (Nt,) each query's own video
    ranks: Tensor  # (Nt,) 1-based t2v rank of that video
    scores: Tensor  # (Nt,) the query's score against its own video
    hit_videos: Tensor  # (Nt, k) best first
    hit_scores: Tensor  # (Nt, k)

    def worst(self, n: int) -> list[int]:
        """The ``n`` queries whose own video ranked lowest, worst first (ties in query order)."""
        order = sorted(range(len(self.texts)), key=lambda i: -int(self.ranks[i]))
        return order[:n]


@torch.no_grad()
def rerank_topk(
    text_emb: Tensor,
    video_emb: Tensor,
    text_to_video: Tensor,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    k: int = 128,
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Re-rank each query's top-``k`` dual-encoder candidates with ``score_fn`` (e.g. the alignment
    decoder's matching score) and return the same flat metrics.

    ``score_fn(text_idx (M,), video_idx (M,)) -> (M,)`` scores pairs of indices (CPU long tensors into
    ``text_emb`` and ``video_emb``'s rows); it is called once per query
    with its ``k`` candidates, so the caller owns the model and its batching. A ground truth inside the
    top-``k`` gets 1 + the number of candidates the new scores put strictly above it; one outside keeps its
    dual-encoder rank (> k), since re-ranking only reorders the top-``k``.
    """
    n_text, n_video = text_to_video.shape[0], video_emb.shape[0]
    gt = text_to_video.long().cpu()
    t2v_base, v2t_base = retrieval_ranks(text_emb, video_emb, gt, chunk_size=chunk_size)
    k_videos, k_texts = min(k, n_video), min(k, n_text)
    t2v_top = torch.empty(n_text, k_videos, dtype=torch.long)
    v2t_vals = torch.full((n_video, k_texts), float("-inf"))
    v2t_top = torch.zeros(n_video, k_texts, dtype=torch.long)
    for start, block in similarity_chunks(text_emb, video_emb, chunk_size):
        block = block.cpu()
        t2v_top[start : start + block.shape[0]] = block.topk(k_videos, 1).indices
        # running top-k texts per video: merge the kept ones with this chunk's column
        ids = torch.arange(start, start + block.shape[0]).expand(n_video, -1)
        vals, pos = torch.cat([v2t_vals, block.t()], 1).topk(k_texts, 1)
        v2t_vals, v2t_top = vals, torch.cat([v2t_top, ids], 1).gather(1, pos)

    def reranked(is_true: Tensor, new: Tensor, base: Tensor) -> Tensor:
        if not is_true.any():
            return base
        return 1 + (new > new[is_true].max()).sum()

    t2v = torch.stack(
        [
            reranked(c == gt[i], score_fn(torch.full_like(c, i), c).float().cpu(), t2v_base[i])
            for i, c in enumerate(t2v_top)
        ]
    )
    v2t = torch.stack(
        [
            reranked(gt[c] == v, score_fn(c, torch.full_like(c, v)).float().cpu(), v2t_base[v])
            if v2t_base[v] > 0
            else v2t_base[v]
            for v, c in enumerate(v2t_top)
        ]
    )
    return rank_metrics(t2v, "t2v") | rank_metrics(v2t, "v2t")
