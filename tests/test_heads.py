"""Alignment (ITM) decoder, caption decoder with generation, and action-recognition heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videovl.config import AlignmentConfig, CaptionConfig
from videovl.losses.caption import caption_loss
from videovl.models.action import ActionHead, class_embeddings_from_prompts, zero_shot_logits
from videovl.models.alignment import AlignmentDecoder
from videovl.models.caption import CaptionDecoder, target_positions
from videovl.models.layers.decoder import DecoderBlock

VOCAB, PAD, BOS, EOS = 16, 0, 1, 2  # BERT order: [PAD] first, then [CLS] as bos and [SEP] as eos


pytestmark = pytest.mark.usefixtures("one_thread")


def caption_decoder(visual_width: int = 24, tie: bool = True, depth: int = 2) -> CaptionDecoder:
    cfg = CaptionConfig(width=32, depth=depth, heads=4, max_length=12, tie_embeddings=tie)
    return CaptionDecoder(cfg, VOCAB, visual_width, bos_id=BOS, eos_id=EOS, pad_id=PAD)


def assert_all_parameters_have_gradient(module: torch.nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"


def sequence_logprob(model: CaptionDecoder, ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Teacher-forced sum of log p over the tokens after bos, up to and including the first eos."""
    with torch.no_grad():
        logp = F.log_softmax(model(ids, None, visual).float(), -1)[:, :-1]
    token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, L-1)
    after_eos = (ids[:, 1:] == EOS).long().cumsum(1) - (ids[:, 1:] == EOS).long()  # >0 past the first eos
    return (token_logp * (after_eos == 0)).sum(1)


def check_generated(seqs: torch.Tensor, max_length: int) -> None:
    assert seqs.dtype == torch.long and seqs.shape[1] <= max_length
    assert (seqs[:, 0] == BOS).all()
    assert ((seqs >= 0) & (seqs < VOCAB)).all()
    for row in seqs.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :]), row


# ------------------------------------------------------------------------------------------- block


def test_decoder_block_ignores_padding_and_masked_memory():
    torch.manual_seed(0)
    block = DecoderBlock(32, 4, causal=False).eval()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    reference = block(x, memory)
    padded_x = torch.cat([x, torch.randn(2, 3, 32)], 1)  # garbage in 3 padded positions
    mask = torch.tensor([[1] * 5 + [0] * 3] * 2)
    padded_memory = torch.cat([memory, torch.randn(2, 4, 32)], 1)
    memory_mask = torch.tensor([[1] * 7 + [0] * 4] * 2)
    out = block(padded_x, padded_memory, mask, memory_mask)
    torch.testing.assert_close(out[:, :5], reference, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()
    # Left padding under a causal mask leaves the first queries no real key: still no NaN anywhere.
    left = DecoderBlock(32, 4, causal=True)(x, memory, torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]]))
    assert torch.isfinite(left).all()
    with pytest.raises(ValueError, match="not divisible by heads 5"):
        DecoderBlock(32, 5)


# --------------------------------------------------------------------------------------- alignment


def test_alignment_logits_gradients_and_padding():
    torch.manual_seed(0)
    head = AlignmentDecoder(AlignmentConfig(width=32, depth=2, heads=4), text_width=20, visual_width=24)
    text, visual = torch.randn(3, 6, 20), torch.randn(3, 9, 24)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    logits = head(text, mask, visual)
    assert logits.shape == (3, 2)
    F.cross_entropy(logits, torch.tensor([1, 0, 1])).backward()
    assert_all_parameters_have_gradient(head)

    with torch.no_grad():  # what the padded positions hold does not matter
        garbage = torch.where(mask[..., None].bool(), text, torch.randn_like(text))
        torch.testing.assert_close(head(garbage, mask, visual), logits.detach(), atol=1e-5, rtol=1e-5)
        alone = head(text[2:, :2], None, visual[2:])
        torch.testing.assert_close(alone, logits[2:].detach(), atol=1e-5, rtol=1e-5)
        score = head.score(text, mask, visual)
        torch.testing.assert_close(score, logits[:, 1] - logits[:, 0])
    with pytest.raises(ValueError, match="3 texts but 2 clips"):
        head(text, mask, visual[:2])


def test_alignment_score_pairs_matches_pairwise_loop():
    torch.manual_seed(0)
    head = AlignmentDecoder(
        AlignmentConfig(width=32, depth=1, heads=4), text_width=20, visual_width=24
    ).eval()
    text, mask, clips = torch.randn(4, 5, 20), torch.ones(4, 5), torch.randn(6, 3, 24)
    mask[1, 3:] = 0
    topk = torch.tensor([[5, 0], [2, 2], [1, 3], [4, 0]])  # (Nt, K) candidate clips of each text
    with torch.no_grad():
        rows = torch.arange(4).repeat_interleave(2)
        scores = head.score_pairs(text, mask, clips, rows, topk.flatten(), chunk_size=3).view(4, 2)
        loop = [
            [head.score(text[t : t + 1], mask[t : t + 1], clips[c : c + 1]) for c in r]
            for t, r in enumerate(topk)
        ]
    torch.testing.assert_close(
        scores, torch.tensor([[s.item() for s in r] for r in loop]), atol=1e-5, rtol=1e-5
    )


# ----------------------------------------------------------------------------------------- caption


def test_caption_shapes_gradients_and_tying():
    torch.manual_seed(0)
    model = caption_decoder()
    ids = torch.randint(3, VOCAB, (2, 7))
    logits = model(ids, torch.ones(2, 7), torch.randn(2, 5, 24))
    assert logits.shape == (2, 7, VOCAB)
    F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    assert_all_parameters_have_gradient(model)
    assert model.lm_head.weight is model.token_embed.weight
    assert caption_decoder(tie=False).lm_head.weight is not caption_decoder(tie=False).token_embed.weight
    with pytest.raises(ValueError, match="13 tokens exceeds model.caption.max_length=12"):
        model(torch.ones(1, 13, dtype=torch.long), None, torch.randn(1, 5, 24))


def test_caption_positions_project_only_the_real_targets():
    torch.manual_seed(0)
    model = caption_decoder().eval()
    ids, mask, memory = torch.randint(3, VOCAB, (2, 7)), torch.ones(2, 7), torch.randn(2, 5, 24)
    mask[1, 4:] = 0
    positions = target_positions(mask)
    assert positions.tolist() == [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]]
    packed = model(ids, mask, memory, positions=positions)
    assert packed.shape == (9, VOCAB)
    torch.testing.assert_close(packed, model(ids, mask, memory)[positions])


def test_caption_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    model = caption_decoder().eval()
    visual = torch.randn(2, 5, 24)
    ids = torch.randint(3, VOCAB, (2, 8))
    with torch.no_grad():
        logits = model(ids, None, visual)
        changed = ids.clone()
        changed[:, 5] = (changed[:, 5] + 1 - 3) % (VOCAB - 3) + 3
        after = model(changed, None, visual)
        torch.testing.assert_close(after[:, :5], logits[:, :5])  # the past does not see the future
        assert not torch.allclose(after[:, 5:], logits[:, 5:])

        padded = torch.cat([ids[:, :5], torch.full((2, 4), PAD)], 1)  # [CLS] w w w [SEP] [PAD] x4
        mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 4)], 1)
        torch.testing.assert_close(model(padded, mask, visual)[:, :5], logits[:, :5], atol=1e-5, rtol=1e-5)


class RiggedDecoder(CaptionDecoder):
    """Emits eos exactly after k tokens, with k read from visual token 0, channel 0 (visual_proj is the
    identity); the other tokens follow the random model, so beams still differ."""

    def next_token_logits(self, prefix, memory, memory_mask=None):
        logits = super().next_token_logits(prefix, memory, memory_mask)
        generated = prefix.shape[1] - 1
        eos_wins = generated >= memory[:, 0, 0].round()  # (B,)
        logits[:, EOS] = torch.where(eos_wins, 50.0, -50.0)
        return logits


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_stops_at_eos_after_k_steps(num_beams):
    torch.manual_seed(0)
    cfg = CaptionConfig(width=32, depth=1, heads=4, max_length=12)
    model = RiggedDecoder(cfg, VOCAB, visual_width=32, bos_id=BOS, eos_id=EOS, pad_id=PAD).eval()
    with torch.no_grad():
        model.visual_proj.weight.copy_(torch.eye(32))
        model.visual_proj.bias.zero_()
    visual = torch.randn(3, 4, 32)
    visual[:, 0, 0] = torch.tensor([1.0, 3.0, 6.0])  # the third would need 8 tokens with bos and eos
    seqs = model.generate(visual, max_length=7, num_beams=num_beams)
    check_generated(seqs, max_length=7)
    assert seqs.shape == (3, 7)
    assert seqs[0, 2] == EOS and (seqs[0, 3:] == PAD).all()
    assert seqs[1, 4] == EOS and (seqs[1, 5:] == PAD).all()
    assert EOS not in seqs[2].tolist()  # cut by the length limit


def reference_beam_search(model, visual, max_length, beams, length_penalty):
    """The beam search of CaptionDecoder written plainly: one sample and one hypothesis at a time."""
    results = []
    for clip in visual:
        memory = model.visual_proj(clip[None])
        live, finished = [(0.0, [BOS])], []
        for length in range(1, max_length):
            candidates = []
            for score, ids in live:
                logp = F.log_softmax(model.next_token_logits(torch.tensor([ids]), memory)[0].float(), -1)
                candidates += [(score + lp, ids + [t]) for t, lp in enumerate(logp.tolist())]
            candidates.sort(key=lambda c: -c[0])
            live = [c for c in candidates[: 2 * beams] if c[1][-1] != EOS][:beams]
            ends = [c for c in candidates[:beams] if c[1][-1] == EOS]
            finished += [(score / length**length_penalty, ids) for score, ids in ends]
            longest = max_length - 1 if length_penalty > 0 else length
            if finished and max(finished)[0] >= live[0][0] / longest**length_penalty:
                break
        else:
            finished += [(score / (max_length - 1) ** length_penalty, ids) for score, ids in live]
        results.append(max(finished)[1])
    return results


def random_decoder(seed: int) -> CaptionDecoder:
    """A decoder whose weights are large enough that the clip matters, next-token distributions are
    peaked and eos comes at various steps (the trained-style init makes every caption alike)."""
    torch.manual_seed(seed)
    model = caption_decoder(tie=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 1.0)
        model.lm_head.bias[EOS] = 1.0
    return model


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_matches_plain_reference(length_penalty):
    model = random_decoder(seed=0)
    visual = torch.randn(4, 5, 24)
    beams = model.generate(visual, max_length=9, num_beams=3, length_penalty=length_penalty)
    with torch.no_grad():
        reference = reference_beam_search(model, visual, 9, 3, length_penalty)
    assert beams.tolist() == [ids + [PAD] * (beams.shape[1] - len(ids)) for ids in reference]
    check_generated(beams, 9)


def test_greedy_equals_beam_of_one_and_beams_score_at_least_greedy():
    model = random_decoder(seed=0)
    visual = torch.randn(6, 5, 24)
    greedy = model.generate(visual, max_length=10)
    with torch.no_grad():
        beam_one = model._beam_search(model.visual_proj(visual), None, 10, beams=1, length_penalty=0.0)
    assert torch.equal(beam_one, greedy)

    # Beam search is not guaranteed to beat greedy decoding (the greedy prefix can be pruned), but on
    # peaked distributions it does: 240 samples over 40 seeds of this setup showed no exception.
    beams = model.generate(visual, max_length=10, num_beams=3, length_penalty=0.0)
    check_generated(greedy, 10)
    check_generated(beams, 10)
    beam_score, greedy_score = sequence_logprob(model, beams, visual), sequence_logprob(model, greedy, visual)
    assert (beam_score >= greedy_score - 1e-4).all(), (beam_score, greedy_score)
    assert (beam_score > greedy_score + 1e-3).any()  # the comparison is not vacuous
    with pytest.raises(ValueError, match="max_length=13 must be in"):
        model.generate(visual, max_length=13)
    with pytest.raises(ValueError, match="num_beams=9 must be in"):
        model.generate(visual, num_beams=9)


def test_caption_decoder_overfits_two_clips():
    torch.manual_seed(0)
    model = caption_decoder(visual_width=16, depth=1)
    visual = torch.randn(2, 4, 16)
    targets = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 9, 6, 11, EOS]])  # the clip decides the words
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        logits = model(targets, torch.ones_like(targets), visual)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    model.eval()
    assert torch.equal(model.generate(visual), targets)
    assert torch.equal(model.generate(visual, num_beams=2), targets)


# ------------------------------------------------------------------------------------------ action


def test_action_head_and_zero_shot():
    torch.manual_seed(0)
    head = ActionHead(16, 5, dropout=0.1)
    assert head(torch.randn(3, 16)).shape == (3, 5)
    with pytest.raises(ValueError, match="num_classes >= 1"):
        ActionHead(16, 0)

    prompts = torch.randn(4, 3, 16)
    classes = class_embeddings_from_prompts(prompts)
    torch.testing.assert_close(classes.norm(dim=-1), torch.ones(4))
    rescaled = prompts * torch.rand(4, 3, 1) * 10  # a prompt's norm does not weigh in the average
    torch.testing.assert_close(class_embeddings_from_prompts(rescaled), classes)
    torch.testing.assert_close(
        class_embeddings_from_prompts(prompts[:, :1]), F.normalize(prompts[:, 0], dim=-1)
    )

    video = torch.randn(5, 16)
    logits = zero_shot_logits(video, classes, 100.0)
    loop = [[100.0 * F.cosine_similarity(v, c, dim=0) for c in classes] for v in video]
    torch.testing.assert_close(logits, torch.tensor(loop), atol=1e-5, rtol=1e-5)


def test_a_decoder_restricted_to_a_vocabulary_scores_and_speaks_only_those_tokens():
    torch.manual_seed(0)
    model = caption_decoder().eval()
    words = torch.tensor([3, 5, 8, 11])
    model.set_vocabulary(words)
    vocab = model.vocabulary()
    assert vocab.tolist() == [BOS, EOS, 3, 5, 8, 11]  # the start and end tokens always
    ids = torch.tensor([[BOS, 3, 8, 5, EOS, PAD], [BOS, 11, EOS, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    memory = torch.randn(2, 5, 24)
    positions = target_positions(mask)
    full = model(ids, mask, memory, positions=positions)
    packed = model(ids, mask, memory, positions=positions, vocabulary=vocab)
    assert packed.shape == (6, 6)
    torch.testing.assert_close(packed, full[:, vocab])
    # the loss is the softmax over the vocabulary's columns, targets mapped to them
    targets = ids[:, 1:][mask[:, 1:].bool()]
    want = F.cross_entropy(full[:, vocab], torch.searchsorted(vocab, targets))
    got = caption_loss(packed, ids, mask, vocabulary=vocab)["caption_loss"]
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, caption_loss(full, ids, mask)["caption_loss"])
    with pytest.raises(ValueError, match=r"token ids \[4\] are outside the decoder's vocabulary of 6"):
        caption_loss(packed, ids.masked_fill(ids == 5, 4), mask, vocabulary=vocab)
    # generation picks from the vocabulary alone, greedy and beam
    for beams in (1, 3):
        seqs = model.generate(torch.randn(4, 5, 24), max_length=8, num_beams=beams)
        assert set(seqs.flatten().tolist()) <= {PAD, *vocab.tolist()}
    with pytest.raises(ValueError, match=r"num_beams=4 must be in \[1, 3\]"):
        model.generate(memory, max_length=8, num_beams=4)
    # the vocabulary travels with the weights; a state dict from before it speaks every token
    state = model.state_dict()
    other = caption_decoder()
    other.load_state_dict(state)
    assert torch.equal(other.vocabulary(), vocab)
    del state["vocab_mask"]
    other.load_state_dict(state)
    assert other.vocabulary() is None and bool(other.vocab_mask.all())
    model.set_vocabulary(None)
    assert model.vocabulary() is None
    torch.testing.assert_close(model(ids, mask, memory, positions=positions), full)
