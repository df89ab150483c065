"""Global, frame-level and word-to-frame similarity against naive loops; temporal aggregation limits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from videovl.models.matching import (
    AGGREGATIONS,
    aggregate,
    frame_similarity,
    global_similarity,
    word_frame_similarity,
)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def naive_reduce(values: list[float], how: str, temperature: float) -> float:
    if how == "mean":
        return sum(values) / len(values)
    if how == "max":
        return max(values)
    weights = [math.exp(v / temperature) for v in values]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def test_global_similarity_is_every_text_against_every_clip():
    text, video = unit(3, 8, seed=1), unit(5, 8, seed=2)
    sim = global_similarity(text, video)
    assert sim.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert sim[i, j].item() == pytest.approx(dot(text[i], video[j]), abs=1e-12)


@pytest.mark.parametrize("how", AGGREGATIONS)
@pytest.mark.parametrize("frames_per_clip", [1, 5])
def test_frame_similarity_matches_naive_loop(how, frames_per_clip):
    text, frames = unit(3, 8, seed=3), unit(4, frames_per_clip, 8, seed=4)
    sim = frame_similarity(text, frames, how, temperature=0.2)
    assert sim.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            scores = [dot(text[i], frames[j, t]) for t in range(frames_per_clip)]
            assert sim[i, j].item() == pytest.approx(naive_reduce(scores, how, 0.2), abs=1e-10)


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_word_frame_similarity_matches_naive_loop(how):
    nt, nv, length, t, temp = 3, 2, 5, 4, 0.3
    words, frames = unit(nt, length, 8, seed=5), unit(nv, t, 8, seed=6)
    lengths = [5, 2, 1]  # a full sentence, a short one, a one-token one
    mask = torch.tensor([[1] * n + [0] * (length - n) for n in lengths])
    sim = word_frame_similarity(words, mask, frames, how, temp)
    assert sim.shape == (nt, nv)
    for i in range(nt):
        real = range(lengths[i])
        for j in range(nv):
            score = [[dot(words[i, w], frames[j, f]) for f in range(t)] for w in real]
            word_to_clip = sum(naive_reduce(row, how, temp) for row in score) / len(real)
            frame_to_text = sum(naive_reduce([score[w][f] for w in real], how, temp) for f in range(t)) / t
            expected = (word_to_clip + frame_to_text) / 2
            assert sim[i, j].item() == pytest.approx(expected, abs=1e-10), (i, j)


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_word_frame_similarity_ignores_padded_words(how):
    words, frames = unit(2, 6, 8, seed=7), unit(3, 4, 8, seed=8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    before = word_frame_similarity(words, mask, frames, how)
    garbage = words.clone()
    garbage[mask == 0] = unit(int((mask == 0).sum()), 8, seed=9) * 5
    torch.testing.assert_close(word_frame_similarity(garbage, mask, frames, how), before)
    # Trimming the padding away gives the same scores as well.
    torch.testing.assert_close(word_frame_similarity(words[:1, :3], mask[:1, :3], frames, how), before[:1])


def test_aggregate_rejects_unknown_name():
    with pytest.raises(ValueError, match="'median'.*softmax"):
        aggregate(torch.zeros(2, 3), "median")
    with pytest.raises(ValueError, match="'median'"):
        frame_similarity(unit(2, 4), unit(2, 3, 4), "median")


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_aggregate_reduces_the_given_dim(how):
    scores = unit(2, 3, 4, seed=10)[..., 0]  # (2, 3) of distinct values in (-1, 1)
    for dim in (0, 1, -1):
        out = aggregate(scores, how, 0.5, dim=dim)
        expected = aggregate(scores.movedim(dim, -1), how, 0.5)
        torch.testing.assert_close(out, expected)
    single = scores[:, :1]
    torch.testing.assert_close(aggregate(single, how, 0.5), single[:, 0])  # one frame: its own score


def test_softmax_aggregation_tends_to_max_and_to_mean():
    scores = unit(6, 7, 16, seed=11)[..., 0]  # (6, 7), distinct values
    top = scores.amax(-1)
    mean = scores.mean(-1)
    cold = [(aggregate(scores, "softmax", t) - top).abs().max().item() for t in (1.0, 0.1, 0.01, 1e-4)]
    hot = [(aggregate(scores, "softmax", t) - mean).abs().max().item() for t in (0.1, 1.0, 100.0, 1e6)]
    assert cold == sorted(cold, reverse=True) and cold[-1] < 1e-9
    assert hot == sorted(hot, reverse=True) and hot[-1] < 1e-6
    for t in (0.01, 0.1, 1.0, 10.0):  # always between the two
        soft = aggregate(scores, "softmax", t)
        assert (soft <= top + 1e-12).all() and (soft >= mean - 1e-12).all()


def test_softmax_aggregation_gives_every_frame_a_gradient_and_max_only_one():
    scores = unit(1, 5, 8, seed=12)[..., 0].requires_grad_()
    aggregate(scores, "softmax", 0.1).sum().backward()
    assert (scores.grad != 0).all()
    scores.grad = None
    aggregate(scores, "max").sum().backward()
    assert int((scores.grad != 0).sum()) == 1
