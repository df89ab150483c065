"""The QA head on a tiny model: shapes and gradients of the task, the memory mask, closed-list ranking
against a naive full-likelihood reference, and the QA dataset and collator."""

import pytest
import torch

import videovl
from videovl.config import ConfigError, LossWeights
from videovl.data.answers import AnswerVocab
from videovl.data.collate import Collator
from videovl.data.datasets import QADataset
from videovl.data.media.transforms import ClipTransform
from videovl.data.sources import QASample
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.eval.answering import answer_logliks, first_token_logprobs, rank_answers
from videovl.models.factory import model_config
from videovl.tasks.qa import QATask, answer_labels

ANSWERS = ["yes", "no", "left", "up", "3", "left up", "the red ball"]


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    cfg = model_config({"name": "test", "qa": {"enabled": True, "num_answers": len(ANSWERS)}})
    tokenizer = load_tokenizer(cfg.text)
    fill_token_ids(cfg.text, tokenizer)
    model = videovl.create_model(cfg)
    return model, tokenizer


def _rows(video, rows):
    """The same clips' embedding restricted to ``rows``."""
    return type(video)(*(x[rows] for x in video))


def _batch(model, tokenizer, questions, answers):
    v = model.cfg.vision
    q = tokenizer(questions, padding=True, return_tensors="pt")
    a = tokenizer(answers, padding=True, return_tensors="pt")
    return {
        "pixels": torch.randn(len(questions), 3, v.num_frames, v.image_size, v.image_size),
        "input_ids": q["input_ids"],
        "attention_mask": q["attention_mask"],
        "answer": answers,
        "answer_ids": a["input_ids"],
        "answer_mask": a["attention_mask"],
    }


def test_qa_needs_both_decoders():
    with pytest.raises(ConfigError, match="no caption decoder"):
        videovl.create_model({"name": "test", "qa": {"enabled": True}, "caption": {"enabled": False}})


def test_task_losses_and_gradients(parts):
    model, tokenizer = parts
    model.train()
    vocab = AnswerVocab(tuple(ANSWERS))
    task = QATask(model, vocab=vocab)
    batch = _batch(model, tokenizer, ["which way first?", "is it red?", "what?"], ["left", "yes", "purple"])
    out = task(batch, LossWeights(contrastive=0.0, qa=1.0, qa_classify=1.0))
    assert set(out) == {"loss", "qa_loss", "qa_classify_loss", "qa_classify_acc"}
    assert torch.isfinite(out["loss"])
    model.zero_grad()
    out["loss"].backward()
    names = ("qa.question_proj.weight", "qa.clip_proj.weight", "qa.classifier.3.weight",
             "alignment.blocks.0.cross_attn.q.weight", "caption.blocks.0.cross_attn.kv.weight",
             "visual.patch_embed.proj.weight")  # fmt: skip
    for name in names:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    # "purple" is outside the vocabulary: no classifier target
    assert answer_labels(["left", "yes", "purple"], vocab).tolist() == [2, 0, -1]
    with pytest.raises(ValueError, match="outputs but the vocabulary has 2"):
        QATask(model, vocab=AnswerVocab(("yes", "no")))


def test_question_padding_does_not_change_the_answer(parts):
    """The memory mask keeps the question's padding out of the decoder's cross-attention."""
    model, tokenizer = parts
    model.eval()
    b = _batch(model, tokenizer, ["which way does the digit move first?", "which digit?"], ["left", "3"])
    with torch.no_grad():
        video = model.encode_video(b["pixels"])
        logits = []
        for padding in ("longest", "max_length"):
            q = tokenizer(["which digit?"], padding=padding, max_length=16, return_tensors="pt")
            text = model.encode_text(q["input_ids"], q["attention_mask"])
            fused = model.fuse_question(text.hidden, text.mask, video.tokens[1:])
            memory, mask = model.answer_memory(fused, text.mask, _rows(video, slice(1, None)))
            logits.append(model.answer_logits(b["answer_ids"][1:], b["answer_mask"][1:], memory, mask))
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)


def test_answers_read_the_clip_embedding(parts):
    """The clip embedding (which holds frame order with the ordered pool) is memory of its own: changing
    only it changes the answer and the classifier's scores."""
    model, tokenizer = parts
    model.eval()
    b = _batch(model, tokenizer, ["which way first?", "is it red?"], ["left", "yes"])
    with torch.no_grad():
        video = model.encode_video(b["pixels"])
        text = model.encode_text(b["input_ids"], b["attention_mask"])
        fused = model.fuse_question(text.hidden, text.mask, video.tokens)
        other = video._replace(clip=10 * torch.randn_like(video.clip))
        out = []
        for v in (video, other):
            memory, mask = model.answer_memory(fused, text.mask, v)
            assert memory.shape[1] == video.tokens.shape[1] + 1 + text.hidden.shape[1] == mask.shape[1]
            out.append(model.answer_logits(b["answer_ids"], b["answer_mask"], memory, mask))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_ranking_equals_naive_full_likelihood(parts):
    model, tokenizer = parts
    model.eval()
    b = _batch(model, tokenizer, ["which way?", "is it red?", "what digit?", "and?"], ["left"] * 4)
    a = tokenizer(ANSWERS, padding=True, return_tensors="pt")
    with torch.no_grad():
        video = model.encode_video(b["pixels"])
        text = model.encode_text(b["input_ids"], b["attention_mask"])
        fused = model.fuse_question(text.hidden, text.mask, video.tokens)
        memory, mask = model.answer_memory(fused, text.mask, video)
        naive = torch.zeros(4, len(ANSWERS))
        for q in range(4):
            for j, answer in enumerate(ANSWERS):  # one answer at a time, unpadded, token by token
                ids = tokenizer([answer], return_tensors="pt")["input_ids"]
                for t in range(1, ids.shape[1]):
                    step = model.caption.next_token_logits(ids[:, :t], memory[q : q + 1], mask[q : q + 1])
                    naive[q, j] += torch.log_softmax(step.float(), -1)[0, ids[0, t]]
        every = torch.arange(len(ANSWERS)).expand(4, -1)
        batched = answer_logliks(
            model, memory, mask, a["input_ids"], a["attention_mask"], every, chunk_size=5
        )
        torch.testing.assert_close(batched, naive, atol=1e-4, rtol=1e-4)
        # k = all answers: the best full likelihood; k = 2: the best of the two best first tokens
        assert rank_answers(model, memory, mask, a["input_ids"], a["attention_mask"], k=99).tolist() == (
            naive.argmax(1).tolist()
        )
        first = first_token_logprobs(model, memory, mask, a["input_ids"][:, 1])
        top2 = first.topk(2, dim=1).indices
        expected = top2.gather(1, naive.gather(1, top2).argmax(1, keepdim=True)).squeeze(1)
        assert rank_answers(model, memory, mask, a["input_ids"], a["attention_mask"], k=2).tolist() == (
            expected.tolist()
        )


def test_qa_dataset_and_collator(tiny_demo, parts):
    _, tokenizer = parts
    questions = [
        QASample("a", str(tiny_demo / "videos/test/000000.mp4"), "which way first?", "Left.", "first"),
        QASample("b", str(tiny_demo / "videos/test/000000.mp4"), "which digit?", "3", "digit"),
        QASample("c", str(tiny_demo / "absent.mp4"), "which digit?", "two", "digit"),
    ]
    data = QADataset(questions, num_frames=4, transform=ClipTransform(32, train=False), train=False)
    items = [data[i] for i in range(3)]
    assert [x["answer"] for x in items] == ["left", "3", "2"]  # normalised
    assert [x["text"] for x in items] == ["which way first?", "which digit?", "which digit?"]
    assert [x["valid"] for x in items] == [True, True, False]
    assert torch.equal(items[0]["pixels"], items[1]["pixels"])  # one video, decoded once
    batch = Collator(tokenizer, 16)(items)
    assert batch["answer"] == ["left", "3", "2"]
    assert (
        batch["answer_ids"].shape == batch["answer_mask"].shape
        and batch["answer_ids"][0, 0] == tokenizer.cls_token_id
    )
    with pytest.raises(ValueError, match="mixes question-answering items"):
        Collator(tokenizer, 16)([items[0], {k: v for k, v in items[1].items() if k != "answer"}])
