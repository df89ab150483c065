"""Losses against naive loop implementations (single process; the 2-process check is in
test_distributed_losses.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from videovl.losses import (
    ContrastiveLoss,
    FrameContrastiveLoss,
    caption_loss,
    frame_contrastive_loss,
    itm_loss,
    positive_block,
    positive_mask,
    sample_hard_negatives,
    sigmoid_loss,
    soft_target_infonce,
)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def naive_positives(labels, texts, videos, n=8):
    same = lambda a, i, j: a is not None and a[i] == a[j]
    return [
        [i == j or (labels is not None and labels[i] >= 0 and labels[i] == labels[j]) or same(texts, i, j)
         or same(videos, i, j) for j in range(n)]
        for i in range(n)
    ]  # fmt: skip


def naive_infonce(sim, scale, pos):
    """Loop version: each row's loss is the mean over its positives of -log softmax; both directions."""
    n = len(sim)
    total = 0.0
    for direction in (lambda i, j: sim[i][j], lambda i, j: sim[j][i]):
        for i in range(n):
            row = [scale * direction(i, j) for j in range(n)]
            log_z = math.log(sum(math.exp(v) for v in row))
            ps = [j for j in range(n) if pos[i][j]]
            total += sum(log_z - row[j] for j in ps) / len(ps) / n
    return total / 2


LABELS = [3, -1, 3, 5, -1, 5, -1, -1]
TEXTS = [10, 11, 12, 13, 14, 15, 11, 17]  # samples 1 and 6 share a caption
VIDEOS = [0, 1, 2, 3, 4, 5, 6, 4]  # samples 4 and 7 are two captions of one clip


def test_positive_mask_matches_definition():
    mask = positive_mask(torch.tensor(LABELS), torch.tensor(TEXTS), video_ids=torch.tensor(VIDEOS))
    assert mask.tolist() == naive_positives(LABELS, TEXTS, VIDEOS)
    # unlabelled samples (-1) are not positives of each other through their label
    assert not positive_mask(torch.tensor([-1, -1]), None)[0, 1]
    with pytest.raises(ValueError, match="at least one"):
        positive_mask(None, None)


@pytest.mark.parametrize("ids", ["none", "all"])
def test_contrastive_loss_matches_naive_loop(ids):
    video, text, scale = _unit(8, 16, seed=1), _unit(8, 16, seed=2), 14.0
    kwargs = {}
    if ids == "all":
        kwargs = dict(
            label_ids=torch.tensor(LABELS), text_hash=torch.tensor(TEXTS), video_ids=torch.tensor(VIDEOS)
        )
    out = ContrastiveLoss()(video, text, scale, **kwargs)
    sim = (text @ video.t()).tolist()
    pos = naive_positives(*((LABELS, TEXTS, VIDEOS) if ids == "all" else (None, None, None)))
    assert out["contrastive_loss"].item() == pytest.approx(naive_infonce(sim, scale, pos), abs=1e-5)
    negs = [sim[i][j] for i in range(8) for j in range(8) if not pos[i][j]]
    assert out["contrastive_neg_sim"].item() == pytest.approx(sum(negs) / len(negs), abs=1e-6)
    assert torch.allclose(out["logits_t2v"], scale * (text @ video.t()), atol=1e-6)
    if ids == "none":  # plain CLIP loss when nothing is duplicated
        logits = scale * text @ video.t()
        clip = (F.cross_entropy(logits, torch.arange(8)) + F.cross_entropy(logits.t(), torch.arange(8))) / 2
        assert out["contrastive_loss"].item() == pytest.approx(clip.item(), abs=1e-6)


def test_positive_blocks_tile_the_positive_mask():
    ids = (torch.tensor(LABELS), torch.tensor(TEXTS), torch.tensor(VIDEOS))
    full = positive_mask(*ids[:2], video_ids=ids[2])
    cut = lambda a, b: tuple(i[a:b] for i in ids)  # noqa: E731
    for (r0, r1), (c0, c1) in [((0, 3), (0, 8)), ((3, 8), (2, 5)), ((5, 8), (6, 8))]:
        block = positive_block(cut(r0, r1), cut(c0, c1), r0, c0, (r1 - r0, c1 - c0), torch.device("cpu"))
        assert torch.equal(block, full[r0:r1, c0:c1])


@pytest.mark.parametrize("ids", ["none", "all"])
def test_sigmoid_loss_matches_naive_loop(ids):
    video, text, scale, bias = _unit(8, 16, seed=1), _unit(8, 16, seed=2), 10.0, -3.0
    kwargs = {}
    if ids == "all":
        kwargs = dict(
            label_ids=torch.tensor(LABELS), text_hash=torch.tensor(TEXTS), video_ids=torch.tensor(VIDEOS)
        )
    out = sigmoid_loss(video, text, scale, bias, **kwargs)
    assert set(out) == {"contrastive_loss"}
    sim = (text @ video.t()).tolist()
    pos = naive_positives(*((LABELS, TEXTS, VIDEOS) if ids == "all" else (None, None, None)))
    naive = 0.0
    for i in range(8):
        for j in range(8):
            z = 1.0 if pos[i][j] else -1.0
            naive += math.log1p(math.exp(-z * (scale * sim[i][j] + bias))) / 8
    assert out["contrastive_loss"].item() == pytest.approx(naive, abs=1e-5)
    if ids == "none":  # SigLIP's own formula (as transformers' SiglipModel writes it) for distinct pairs
        logits = text @ video.t() * scale + bias
        signs = 2 * torch.eye(8) - 1
        siglip = -F.logsigmoid(signs * logits).sum(-1).mean()
        assert out["contrastive_loss"].item() == pytest.approx(siglip.item(), abs=1e-6)


def test_positives_are_pulled_together_not_pushed_apart():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
    labels = torch.tensor([7, 7, -1, -1])
    soft_target_infonce(logits, positive_mask(labels, None)).backward()
    assert logits.grad[0, 1] < 0 and logits.grad[1, 0] < 0  # same label: gradient descent raises the logit
    logits.grad = None
    soft_target_infonce(logits, torch.eye(4, dtype=torch.bool)).backward()
    assert logits.grad[0, 1] > 0  # the same pair as a negative would be pushed apart
    assert logits.grad[2, 3] > 0  # unlabelled samples stay negatives


def test_frame_loss_matches_naive_loop():
    text, frames, scale, tau = _unit(6, 8, seed=3), _unit(6, 4, 8, seed=4), 10.0, 0.2
    labels = [1, 1, -1, 2, -1, -1]
    out = frame_contrastive_loss(
        frames, text, scale, how="softmax", temperature=tau, label_ids=torch.tensor(labels)
    )
    sim = []
    for i in range(6):
        row = []
        for j in range(6):
            scores = [float(text[i] @ frames[j, t]) for t in range(4)]
            z = sum(math.exp(s / tau) for s in scores)
            row.append(sum(math.exp(s / tau) / z * s for s in scores))  # softmax-weighted frame scores
        sim.append(row)
    expected = naive_infonce(sim, scale, naive_positives(labels, None, None, n=6))
    assert out["frame_loss"].item() == pytest.approx(expected, abs=1e-5)
    module = FrameContrastiveLoss("softmax", tau)(frames, text, scale, label_ids=torch.tensor(labels))
    assert torch.equal(module["frame_loss"], out["frame_loss"])


def test_hard_negatives_are_never_positives():
    gen = torch.Generator().manual_seed(0)
    n = 12
    labels = torch.randint(0, 4, (n,), generator=gen)
    labels[::3] = -1
    pos = positive_mask(labels, None, video_ids=torch.arange(n) // 2)  # pairs of captions per clip
    sim = 5 * torch.randn(n, n, generator=gen)
    sim[pos] += 50  # positives are by far the most similar: a careless sampler would pick them
    for i in range(200):
        neg_v, neg_t = sample_hard_negatives(sim, pos, gen, uniform=(0.0, 0.5, 1.0)[i % 3])
        assert not pos[torch.arange(n), neg_v].any()
        assert not pos[neg_t, torch.arange(n)].any()


@pytest.mark.parametrize("uniform", [0.0, 0.3, 1.0])
def test_hard_negatives_follow_softmax_of_negatives(uniform):
    sim = torch.tensor(
        [[3.0, 2.0, 1.0, 0.0], [0.0, 3.0, 1.0, 2.0], [1.0, 0.0, 3.0, 2.0], [2.0, 1.0, 0.0, 3.0]]
    )
    pos = torch.eye(4, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True  # 0 and 1 are captions of one clip
    gen = torch.Generator().manual_seed(0)
    draws = 4000
    counts_v, counts_t = torch.zeros(4, 4), torch.zeros(4, 4)
    for _ in range(draws):
        neg_v, neg_t = sample_hard_negatives(sim, pos, gen, uniform=uniform)
        counts_v[torch.arange(4), neg_v] += 1
        counts_t[torch.arange(4), neg_t] += 1
    for counts, s, p in ((counts_v, sim, pos), (counts_t, sim.t(), pos.t())):
        hard = torch.softmax(s, 1) * ~p
        hard /= hard.sum(1, keepdim=True)
        flat = (~p).float() / (~p).sum(1, keepdim=True)
        expected = (1 - uniform) * hard + uniform * flat
        # binomial std <= sqrt(0.25 / 4000) = 0.008; 0.03 is almost 4 sigma
        assert (counts / draws - expected).abs().max() < 0.03


def test_row_without_negatives_gets_minus_one():
    pos = positive_mask(torch.tensor([0, 0, 0]), None)  # the whole batch shares one label
    neg_v, neg_t = sample_hard_negatives(torch.randn(3, 3), pos)
    assert neg_v.tolist() == [-1, -1, -1] and neg_t.tolist() == [-1, -1, -1]
    pos = positive_mask(torch.tensor([0, 0, 1]), None)
    neg_v, _ = sample_hard_negatives(torch.randn(3, 3), pos)
    assert neg_v[:2].tolist() == [2, 2] and neg_v[2].item() in (0, 1)
    neg_v, _ = sample_hard_negatives(
        torch.randn(3, 3), positive_mask(torch.tensor([0, 0, 0]), None), uniform=0.5
    )
    assert neg_v.tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="uniform must lie in"):
        sample_hard_negatives(torch.randn(3, 3), pos, uniform=1.5)


def test_hard_negatives_survive_huge_logits():
    sim = torch.tensor([[100.0, -100.0], [-100.0, 100.0]])  # softmax of the full row underflows to 0
    neg_v, neg_t = sample_hard_negatives(sim, torch.eye(2, dtype=torch.bool))
    assert neg_v.tolist() == [1, 0] and neg_t.tolist() == [1, 0]


def test_itm_loss_is_cross_entropy():
    logits, labels = torch.randn(6, 2), torch.tensor([1, 1, 0, 0, 0, 0])
    assert torch.allclose(itm_loss(logits, labels)["itm_loss"], F.cross_entropy(logits, labels))


def test_caption_loss_ignores_padding_and_matches_naive():
    gen = torch.Generator().manual_seed(0)
    b, length, vocab = 3, 6, 11
    logits = torch.randn(b, length, vocab, generator=gen)
    ids = torch.randint(1, vocab, (b, length), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    out = caption_loss(logits, ids, mask)["caption_loss"]
    terms = [
        -torch.log_softmax(logits[i, t], 0)[ids[i, t + 1]]
        for i in range(b)
        for t in range(length - 1)
        if mask[i, t + 1]
    ]
    assert out.item() == pytest.approx(torch.stack(terms).mean().item(), abs=1e-6)
    # anything at padded positions (logits there, pad ids, even invalid ids) leaves the loss unchanged
    logits2, ids2 = logits.clone(), ids.clone()
    logits2[1, 2:] = 1e3 * torch.randn(4, vocab)  # position 2 predicts the padded position 3
    logits2[2, 1:] = 1e3 * torch.randn(5, vocab)
    ids2[mask == 0] = -7
    assert caption_loss(logits2, ids2, mask)["caption_loss"].item() == pytest.approx(out.item(), abs=1e-6)
    smoothed = caption_loss(logits, ids, mask, label_smoothing=0.1)["caption_loss"]
    assert smoothed.item() != pytest.approx(out.item())
    # packed: only the rows whose target is real, as the decoder returns them with positions=...
    packed = logits[F.pad(mask[:, 1:].bool(), (0, 1))]
    assert caption_loss(packed, ids, mask)["caption_loss"].item() == pytest.approx(out.item(), abs=1e-6)
    with pytest.raises(ValueError, match="packed logits have 5 rows but the batch has 8"):
        caption_loss(packed[:5], ids, mask)
