"""PretrainTask: every loss reaches every parameter it should, the temperature clamp, ITM negatives that are
never positives, clear errors for disabled heads, and gradient checkpointing of the whole model."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

import videovl
import videovl.distributed as distributed
import videovl.losses.contrastive as contrastive
import videovl.tasks.pretrain as pretrain
from videovl.config import ConfigError, LossWeights
from videovl.data.collate import text_hash
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.losses.caption import caption_loss
from videovl.losses.contrastive import positive_mask
from videovl.tasks.pretrain import PretrainTask

ALL = LossWeights(contrastive=1.0, frame=0.5, itm=2.0, caption=0.25)
NO_DROPOUT = {"config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
TEXTS = [
    "a one moves left",
    "a two moves right",
    "a three falls",
    "a four rises slowly",
    "five and six swap places",
    "a seven spins",
    "an eight bounces off the wall",
    "a nine stands still",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(videovl.model_config("test").text)


def make_model(tokenizer, **overrides) -> videovl.VideoLanguageModel:
    cfg = videovl.model_config("test", text=NO_DROPOUT, **overrides)
    fill_token_ids(cfg.text, tokenizer)
    torch.manual_seed(0)
    model = videovl.create_model(cfg)
    with torch.no_grad():  # zero-initialised branches (temporal output projections, biases) block gradients
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return model


def make_batch(tokenizer, n: int = 4, frames: int = 4, seed: int = 0, first: int = 0, **ids) -> dict:
    g = torch.Generator().manual_seed(seed)
    texts = TEXTS[first : first + n]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    return {
        "pixels": torch.randn(n, 3, frames, 32, 32, generator=g),
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "labels": ids.get("labels", torch.full((n,), -1)),
        "index": ids.get("index", torch.arange(n)),
        "text_hash": ids.get("text_hash", torch.tensor([text_hash(t) for t in texts])),
    }


def run(task: PretrainTask, batch: dict, weights: LossWeights = ALL) -> dict:
    task.model.zero_grad(set_to_none=True)
    out = task(batch, weights)
    out["loss"].backward()
    return out


# ---------------------------------------------------------------------------------------------- gradients


def test_video_batch_reaches_every_parameter_with_all_losses(tokenizer):
    model = make_model(tokenizer)
    out = run(PretrainTask(model), make_batch(tokenizer, frames=4))
    parts = {"contrastive_loss", "frame_loss", "itm_loss", "caption_loss"}
    assert parts | {"loss", "itm_acc", "contrastive_neg_sim", "logit_scale"} == out.keys()
    assert all(out[k].ndim == 0 and torch.isfinite(out[k]) for k in out)
    weighted = sum(getattr(ALL, k.removesuffix("_loss")) * out[k] for k in parts)
    torch.testing.assert_close(out["loss"], weighted)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    temporal = {f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()}
    assert "visual.temporal_embed" in temporal and len(temporal) > 1  # and all of them learnt


def test_the_sigmoid_objective_learns_a_bias_and_reaches_every_parameter(tokenizer):
    fresh = videovl.create_model("test", contrastive_loss="sigmoid")
    assert fresh.logit_scale.item() == pytest.approx(math.log(10.0))  # SigLIP's start: scale 10, bias -10
    assert fresh.logit_bias.item() == -10.0 and "logit_bias" in fresh.no_weight_decay()
    assert videovl.create_model("test").logit_bias is None
    model = make_model(tokenizer, contrastive_loss="sigmoid")
    batch = make_batch(tokenizer, frames=4, labels=torch.tensor([2, -1, 2, -1]))
    out = run(PretrainTask(model), batch)
    assert {"contrastive_loss", "itm_loss", "logit_scale", "logit_bias"} <= out.keys()
    assert "contrastive_neg_sim" not in out  # the sigmoid loss builds no (N, N) matrix to report it from
    video = model.encode_video(batch["pixels"]).clip
    text = model.encode_text(batch["input_ids"], batch["attention_mask"]).sentence
    logits = model.scale() * text @ video.t() + model.logit_bias
    signs = positive_mask(batch["labels"], batch["text_hash"], video_ids=batch["index"]).double() * 2 - 1
    expected = -F.logsigmoid(signs * logits.double()).sum() / 4
    assert out["contrastive_loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_image_batch_reaches_everything_but_the_temporal_parameters(tokenizer):
    model = make_model(tokenizer)
    out = run(PretrainTask(model), make_batch(tokenizer, frames=1))  # images arrive as one-frame clips
    assert "frame_loss" not in out  # an image's one frame is its clip
    temporal = {f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()}
    untouched = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()}
    assert untouched == temporal


def test_only_the_weighted_losses_run(tokenizer):
    model = make_model(tokenizer, caption={"enabled": False}, alignment={"enabled": False})
    out = run(PretrainTask(model), make_batch(tokenizer), LossWeights(contrastive=1.0))
    assert {"contrastive_loss", "loss"} <= out.keys() and not {
        "frame_loss",
        "itm_loss",
        "caption_loss",
    } & out.keys()
    torch.testing.assert_close(out["loss"], out["contrastive_loss"])


def test_captions_longer_than_the_decoder_are_learnt_up_to_its_length(tokenizer):
    """The data layer truncates to text.max_length (32 here), the caption decoder has 16 positions."""
    model = make_model(tokenizer)
    assert model.cfg.caption.max_length < model.cfg.text.max_length
    batch = make_batch(tokenizer)
    words = " ".join(f"word{i}" for i in range(40))
    tokens = tokenizer(
        [words, *TEXTS[1:4]], padding=True, truncation=True, max_length=32, return_tensors="pt"
    )
    batch["input_ids"], batch["attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
    out = run(PretrainTask(model), batch, LossWeights(caption=1.0))
    with torch.no_grad():
        video = model.encode_video(batch["pixels"])
        logits = model.caption(batch["input_ids"][:, :16], batch["attention_mask"][:, :16], video.tokens)
    expected = caption_loss(logits, batch["input_ids"][:, :16], batch["attention_mask"][:, :16])
    torch.testing.assert_close(out["caption_loss"], expected["caption_loss"])


def test_disabled_head_with_a_weight_is_a_clear_error(tokenizer):
    model = make_model(tokenizer, caption={"enabled": False}, alignment={"enabled": False})
    task, batch = PretrainTask(model), make_batch(tokenizer)
    with pytest.raises(ConfigError, match=r"itm=2.0.*model\.alignment\.enabled is false"):
        task(batch, ALL)
    with pytest.raises(ConfigError, match=r"caption=0.5.*model\.caption\.enabled is false.*losses\.caption"):
        task(batch, LossWeights(caption=0.5))


def test_logit_scale_is_reported_and_clamped(tokenizer):
    model = make_model(tokenizer)
    task, batch = PretrainTask(model), make_batch(tokenizer)
    out = run(task, batch)
    assert (
        out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
        and not out["logit_scale"].requires_grad
    )
    assert model.logit_scale.grad.abs().item() > 0
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    out = run(task, batch)
    assert out["logit_scale"].item() == pytest.approx(model.cfg.max_logit_scale)
    assert model.logit_scale.grad.item() == 0.0


def test_gradient_checkpointing_gives_same_loss_and_grads(tokenizer):
    model = make_model(tokenizer)
    task, batch = PretrainTask(model).train(), make_batch(tokenizer)
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)  # the hard negatives are drawn at random
        out = run(task, batch)
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, plain_grads), (ckpt, ckpt_grads) = results
    for key in plain:
        torch.testing.assert_close(ckpt[key], plain[key], msg=key)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, msg=name, atol=1e-6, rtol=1e-4)


# -------------------------------------------------------------------------------------------------- ITM


@contextmanager
def recording(module: torch.nn.Module):
    """The positional inputs of every call of ``module`` (the alignment decoder: the pairs it scores)."""
    calls = []
    handle = module.register_forward_hook(lambda m, args, out: calls.append([a.detach() for a in args]))
    try:
        yield calls
    finally:
        handle.remove()


def joint_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """Visual tokens as the alignment decoder receives them: projected into the joint space, unit norm."""
    return F.normalize(model.visual_proj(tokens), dim=-1)


def identify(rows: torch.Tensor, reference: torch.Tensor) -> list[int]:
    """Index of the reference row each row equals (rows of distinct content)."""
    flat_rows, flat_ref = rows.flatten(1), reference.flatten(1)
    dist = torch.cdist(flat_rows, flat_ref)
    assert (dist.min(1).values < 1e-5).all()
    return dist.argmin(1).tolist()


def itm_pairs(task: PretrainTask, batch: dict, monkeypatch, truth: torch.Tensor):
    """Run the task once and return the (text, clip) index pairs scored by the ITM head with their labels.

    The draw is steered towards the true positives (``truth``), so any kind of positive the task forgot to
    mask out would be drawn as a negative."""
    model = task.model
    labels = []
    real_itm_loss, real_sample = pretrain.itm_loss, pretrain.sample_hard_negatives
    monkeypatch.setattr(pretrain, "itm_loss", lambda logits, y: labels.append(y) or real_itm_loss(logits, y))
    lure = lambda sim, pos, **kw: real_sample(sim + 1e4 * truth, pos, **kw)  # noqa: E731
    monkeypatch.setattr(pretrain, "sample_hard_negatives", lure)
    with torch.no_grad(), recording(model.alignment) as calls:
        task(batch, ALL)
    with torch.no_grad():
        video = model.encode_video(batch["pixels"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    [(words, mask, tokens)] = calls  # the decoder sees both sequences in the joint space
    length = text.hidden.shape[1]
    assert not words[:, length:].any() and not mask[:, length:].any()  # padding to max_length only
    texts = identify(words[:, :length], text.words)
    clips = identify(tokens, joint_tokens(model, video.tokens))
    return list(zip(texts, clips)), labels[0].tolist()


def test_itm_never_draws_a_positive_as_negative(tokenizer, monkeypatch):
    model = make_model(tokenizer).eval()  # no dropout: the recorded rows can be matched to their sample
    n = 8
    # Distinct contents, but the ids declare positives of every kind: rows 0 and 1 share a label,
    # rows 2 and 3 a caption hash, rows 4 and 5 a video index (two captions of one clip).
    labels = torch.tensor([7, 7, -1, -1, -1, -1, 3, -1])
    hashes = torch.tensor([text_hash(t) for t in TEXTS])
    hashes[3] = hashes[2]
    index = torch.tensor([0, 1, 2, 3, 4, 4, 6, 7])
    batch = make_batch(tokenizer, n=n, labels=labels, index=index, text_hash=hashes)
    truth = positive_mask(labels, hashes, video_ids=index)
    assert int(truth.sum()) == n + 6
    for seed in range(3):
        torch.manual_seed(seed)
        pairs, y = itm_pairs(PretrainTask(model), batch, monkeypatch, truth.float())
        monkeypatch.undo()
        assert pairs[:n] == [(i, i) for i in range(n)] and y[:n] == [1] * n
        assert len(pairs) == 3 * n and y[n:] == [0] * (2 * n)  # a negative clip per text, a text per clip
        assert [t for t, _ in pairs[n : 2 * n]] == list(range(n))
        assert [c for _, c in pairs[2 * n :]] == list(range(n))
        drawn = [(t, c) for t, c in pairs[n:] if truth[t, c]]
        assert drawn == []


def test_the_stage_uniform_share_reaches_the_negative_sampler(tokenizer, monkeypatch):
    model = make_model(tokenizer).eval()
    seen = []
    real_sample = pretrain.sample_hard_negatives
    monkeypatch.setattr(
        pretrain,
        "sample_hard_negatives",
        lambda sim, pos, **kw: seen.append(kw) or real_sample(sim, pos, **kw),
    )
    with torch.no_grad():
        PretrainTask(model)(make_batch(tokenizer), LossWeights(itm=1.0, itm_uniform_negatives=0.8))
    assert seen == [{"uniform": 0.8}]


def test_itm_without_any_negative_scores_only_the_pairs(tokenizer, monkeypatch):
    model = make_model(tokenizer).eval()
    batch = make_batch(tokenizer, labels=torch.zeros(4, dtype=torch.long))  # one class: all positives
    pairs, y = itm_pairs(PretrainTask(model), batch, monkeypatch, torch.zeros(4, 4))
    assert pairs == [(i, i) for i in range(4)] and y == [1] * 4


def test_itm_uses_this_ranks_rows_of_an_uneven_global_batch(tokenizer, monkeypatch):
    """Rank 1 of 2 holds 2 samples after rank 0's 3: its texts and clips are rows 3 and 4 of the global
    batch. The collectives are replaced by a fake world whose rank 0 rows are known."""
    model = make_model(tokenizer).eval()
    other = make_batch(tokenizer, n=3, seed=1)
    local = make_batch(tokenizer, n=2, seed=2, first=3)
    length = model.cfg.text.max_length
    pad = lambda t: F.pad(t, (0, 0, 0, length - t.shape[1]))  # noqa: E731
    with torch.no_grad():
        ov = model.encode_video(other["pixels"])
        ot = model.encode_text(other["input_ids"], other["attention_mask"])
        lv = model.encode_video(local["pixels"])
        lt = model.encode_text(local["input_ids"], local["attention_mask"])

    def gather(t: torch.Tensor) -> torch.Tensor:
        if t.numel() == 1:  # the local batch size (2), or the local text length: rank 0 pads to max_length
            head = torch.tensor([3 if int(t) == 2 else length])
        elif t.ndim == 1:  # labels / hashes / indices (all distinct)
            head = torch.arange(100, 103)
        elif not t.is_floating_point():  # attention masks, padded to max_length
            head = F.pad(ot.mask, (0, length - ot.mask.shape[1]))
        elif t.shape[1:] == ov.tokens.shape[1:]:
            head = ov.tokens
        elif t.shape[1:] == (length, ot.hidden.shape[-1]):
            head = pad(ot.hidden)
        else:  # clip, sentence or frame embeddings
            head = F.normalize(torch.randn(3, *t.shape[1:]), dim=-1)
        return torch.cat([head, t])

    for module in (pretrain, contrastive):
        monkeypatch.setattr(module, "gather_with_grad", gather)
        monkeypatch.setattr(module, "gather_no_grad", gather)
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    # Steer the draws: text i's negative is clip i + 1, so clip j's negative is text j - 1 (mod 5).
    shift = torch.roll(torch.eye(5), 1, dims=1)
    real_sample = pretrain.sample_hard_negatives
    monkeypatch.setattr(
        pretrain, "sample_hard_negatives", lambda sim, pos, **kw: real_sample(sim + 1e4 * shift, pos, **kw)
    )
    with torch.no_grad(), recording(model.alignment) as calls:
        PretrainTask(model, rank=1, world_size=2)(local, ALL)
    [(words, _, tokens)] = calls
    texts = identify(words, torch.cat([pad(ot.words), pad(lt.words)]))
    clips = identify(tokens, joint_tokens(model, torch.cat([ov.tokens, lv.tokens])))
    assert list(zip(texts, clips)) == [(3, 3), (4, 4), (3, 4), (4, 0), (2, 3), (3, 4)]


def test_itm_on_one_process_pads_nothing_and_scores_as_padded_captions_do(tokenizer):
    """One process runs the alignment decoder over its batch's longest caption, not text.max_length;
    padding the captions to max_length changes no pair's score."""
    model = make_model(tokenizer).eval()
    batch = make_batch(tokenizer, n=4, seed=3)
    width, length = batch["input_ids"].shape[1], model.cfg.text.max_length
    assert width < length
    padded = dict(batch)
    padded["input_ids"] = F.pad(batch["input_ids"], (0, length - width), value=tokenizer.pad_token_id)
    padded["attention_mask"] = F.pad(batch["attention_mask"], (0, length - width))
    weights = LossWeights(itm=1.0, itm_uniform_negatives=0.5)
    out, seen = {}, {}
    for name, b in (("short", batch), ("padded", padded)):
        torch.manual_seed(0)  # the same negatives drawn
        with torch.no_grad(), recording(model.alignment) as calls:
            out[name] = PretrainTask(model)(b, weights)
        seen[name] = calls[0][0].shape[1]
    assert seen == {"short": width, "padded": length}
    torch.testing.assert_close(out["short"]["itm_loss"], out["padded"]["itm_loss"], rtol=1e-5, atol=1e-6)
