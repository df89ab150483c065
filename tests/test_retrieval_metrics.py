"""Chunked retrieval metrics against a straightforward full-matrix computation (CLIP4Clip-style: sort each
row, find where the ground truth's score first appears), with ties and multi-caption videos."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videovl.eval import rerank_topk, retrieval_metrics, retrieval_ranks, similarity_chunks


def naive_metrics(sim: np.ndarray, text_to_video: np.ndarray) -> dict[str, float]:
    """sim (Nt, Nv) dense; t2v rank = first position of the true score in the descending row; v2t rank =
    best over the video's captions of the first position of that caption's score in the descending column."""
    t2v = []
    for i, row in enumerate(sim):
        desc = np.sort(row)[::-1]
        t2v.append(int(np.nonzero(desc == row[text_to_video[i]])[0][0]) + 1)
    v2t = []
    for v in range(sim.shape[1]):
        own = np.nonzero(text_to_video == v)[0]
        if len(own):
            desc = np.sort(sim[:, v])[::-1]
            v2t.append(min(int(np.nonzero(desc == sim[t, v])[0][0]) + 1 for t in own))
    out = {}
    for name, ranks in (("t2v", np.array(t2v)), ("v2t", np.array(v2t))):
        for k in (1, 5, 10):
            out[f"{name}/R@{k}"] = 100.0 * np.mean(ranks <= k)
        out[f"{name}/MdR"], out[f"{name}/MnR"] = float(np.median(ranks)), float(np.mean(ranks))
    return out


def _data(n_video=23, n_text=61, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # every video but the last has at least one caption, many have several; the last has none
    text_to_video = torch.cat(
        [torch.arange(n_video - 1), torch.randint(0, n_video - 1, (n_text - n_video + 1,), generator=gen)]
    )
    text_to_video = text_to_video[torch.randperm(n_text, generator=gen)]
    video = F.normalize(torch.randn(n_video, dim, generator=gen), dim=-1)
    text = F.normalize(video[text_to_video] + 1.2 * torch.randn(n_text, dim, generator=gen), dim=-1)
    return text, video, text_to_video


def _assert_close(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])
def test_matches_full_matrix_computation(chunk_size):
    text, video, t2v = _data()
    want = naive_metrics((text @ video.t()).double().numpy(), t2v.numpy())
    _assert_close(retrieval_metrics(text, video, t2v, chunk_size=chunk_size), want)
    assert 0 < want["t2v/R@1"] < 100 and 0 < want["v2t/R@1"] < 100  # not a degenerate case


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_ties_are_optimistic_and_match_naive(chunk_size):
    _, _, t2v = _data()
    scores = torch.randint(0, 4, (61, 23), generator=torch.Generator().manual_seed(1)).float()  # many ties
    want = naive_metrics(scores.double().numpy(), t2v.numpy())
    with pytest.warns(UserWarning, match="optimistic"):
        got = retrieval_metrics(None, None, t2v, scores=scores, chunk_size=chunk_size)
    _assert_close(got, want)
    # a callable block source gives the same numbers
    with pytest.warns(UserWarning):
        via_fn = retrieval_metrics(None, None, t2v, scores=lambda a, b: scores[a:b], chunk_size=chunk_size)
    _assert_close(via_fn, want)


def test_small_hand_example():
    # video 0 has captions 0 and 1, video 1 has caption 2
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    with pytest.warns(UserWarning):
        t2v, v2t = retrieval_ranks(None, None, torch.tensor([0, 0, 1]), scores=scores)
    assert t2v.tolist() == [2, 1, 1]  # caption 2 ties with video 0: optimistic rank 1
    assert v2t.tolist() == [1, 2]  # video 0's best caption (1) is first; video 1: caption 0 scores higher


@pytest.mark.parametrize("chunk_size", [3, 1000])
def test_dual_softmax_chunked_equals_dense(chunk_size):
    text, video, t2v = _data(seed=2)
    sim = text @ video.t()
    scale = 20.0
    dense_t2v = sim * torch.softmax(scale * sim, dim=0)  # prior over all text queries, per video
    dense_v2t = sim * torch.softmax(scale * sim, dim=1)  # prior over all video queries, per text
    want_t = naive_metrics(dense_t2v.double().numpy(), t2v.numpy())
    want_v = naive_metrics(dense_v2t.double().numpy(), t2v.numpy())
    got = retrieval_metrics(
        text, video, t2v, chunk_size=chunk_size, dual_softmax=True, dual_softmax_scale=scale
    )
    for key in got:
        want = want_t if key.startswith("t2v") else want_v
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert got != retrieval_metrics(text, video, t2v)  # the trick changes the numbers


def test_similarity_chunks_cover_the_matrix():
    gen = torch.Generator().manual_seed(6)
    q, k = torch.randn(10, 4, generator=gen), torch.randn(6, 4, generator=gen)
    blocks = list(similarity_chunks(q, k, 3))
    assert [s for s, _ in blocks] == [0, 3, 6, 9]
    # different block shapes may use different kernels: equal up to float32 rounding
    assert torch.allclose(torch.cat([b for _, b in blocks]), q @ k.t(), atol=1e-6)


def test_rerank_with_all_candidates_equals_full_ranking_by_new_scores():
    text, video, t2v = _data(n_video=12, n_text=30, seed=3)
    new = torch.randn(30, 12, generator=torch.Generator().manual_seed(4))
    calls = []

    def score_fn(text_idx, video_idx):
        calls.append(len(text_idx))
        return new[text_idx, video_idx]

    got = rerank_topk(text, video, t2v, score_fn, k=128, chunk_size=7)  # k > Nt, Nv: every pair rescored
    _assert_close(got, retrieval_metrics(None, None, t2v, scores=new))
    assert calls == [12] * 30 + [30] * 11  # one call per query (videos without captions are skipped)


def test_rerank_keeps_order_outside_topk():
    text, video, t2v = _data(seed=5)
    base = retrieval_metrics(text, video, t2v)
    same = rerank_topk(text, video, t2v, lambda t, v: (text[t] * video[v]).sum(-1), k=5, chunk_size=8)
    _assert_close(same, base)  # re-scoring with the dual encoder's own score changes nothing
    # an oracle scorer fixes every ground truth inside the top 5, none outside
    oracle = rerank_topk(text, video, t2v, lambda t, v: (t2v[t] == v).float(), k=5, chunk_size=8)
    t_ranks, v_ranks = retrieval_ranks(text, video, t2v)
    assert oracle["t2v/R@1"] == pytest.approx(100 * (t_ranks <= 5).double().mean().item())
    assert oracle["t2v/R@10"] == base["t2v/R@10"]
    assert oracle["v2t/R@1"] == pytest.approx(100 * (v_ranks[v_ranks > 0] <= 5).double().mean().item())


def test_bad_text_to_video_names_the_problem():
    with pytest.raises(ValueError, match="must index the 3 videos"):
        retrieval_metrics(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 3]))
