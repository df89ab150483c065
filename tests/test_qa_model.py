"""The QA head on a tiny model: shapes and gradients of the task, the memory mask, closed-list ranking
against a naive full-likelihood reference, the QA dataset and collator, and evaluation (each clip encoded
once) against answering each question alone."""

import json

import pytest
import torch

import videovl
from videovl.config import ConfigError, LossWeights
from videovl.data import datasets
from videovl.data.answers import AnswerVocab, normalize_answer
from videovl.data.collate import Collator
from videovl.data.datasets import ClipDataset, QADataset
from videovl.data.media.transforms import ClipTransform
from videovl.data.sources import QASample, Sample
from videovl.data.tokenizer import decode, fill_token_ids, load_tokenizer
from videovl.eval.answering import answer_logliks, first_token_logprobs, rank_answers
from videovl.eval.benchmarks import QASet
from videovl.eval.runner import Evaluator
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
    names = ("qa.question_proj.weight", "qa.clip_proj.weight", "qa.joint_q.weight", "qa.joint_v.weight",
             "qa.classifier.3.weight",
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
            assert memory.shape[1] == video.tokens.shape[1] + 2 + text.hidden.shape[1] == mask.shape[1]
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
    assert torch.equal(items[0]["pixels"], items[1]["pixels"])  # one video: the same evaluation frames
    batch = Collator(tokenizer, 16)(items)
    assert batch["answer"] == ["left", "3", "2"]
    assert (
        batch["answer_ids"].shape == batch["answer_mask"].shape
        and batch["answer_ids"][0, 0] == tokenizer.cls_token_id
    )
    with pytest.raises(ValueError, match="mixes question-answering items"):
        Collator(tokenizer, 16)([items[0], {k: v for k, v in items[1].items() if k != "answer"}])


def test_evaluation_encodes_each_clip_once_and_answers_as_one_question_at_a_time(
    tiny_demo, parts, tmp_path, monkeypatch
):
    """Questions of one clip share its embedding: every clip is read and encoded once (questions of a
    clip scattered through the file, more of them than a batch), and each question gets the answers of a
    naive reference that decodes, encodes and answers it alone."""
    model, tokenizer = parts
    v = model.cfg.vision
    video = lambda n: str(tiny_demo / f"videos/test/{n:06d}.mp4")  # noqa: E731
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    asked = [(0, "which digit is shown?"), (1, "which way first?"), (0, "which way first?"),
             (2, "which digit is shown?"), (0, "which way second?"), (-1, "which digit is shown?"),
             (2, "does it move left first?"), (0, "does it move up first?"), (0, "which digit?"),
             (-1, "which way first?")]  # fmt: skip
    questions = [
        QASample(f"q{i}", video(n) if n >= 0 else str(tmp_path / "broken.mp4"), text, "left", "what")
        for i, (n, text) in enumerate(asked)
    ]
    transform = ClipTransform(v.image_size, train=False)
    reads = []
    load = datasets.load_clip
    monkeypatch.setattr(
        datasets, "load_clip", lambda media, **kw: reads.append(kw["name"]) or load(media, **kw)
    )
    evaluator = Evaluator(model, tokenizer, transform, torch.device("cpu"), num_frames=v.num_frames,
                          batch_size=3, text_length=16, show_progress=False)  # fmt: skip
    out = tmp_path / "predictions.json"
    model.eval()
    try:
        metrics = evaluator.qa(QASet("scattered", questions), ANSWERS, k=3,
                               protocols=("rank", "generate", "classify"), classifier_answers=ANSWERS,
                               predictions_out=out)  # fmt: skip
        # one read per distinct clip, the broken one included (its questions are left out and counted)
        assert sorted(reads) == sorted({q.video for q in questions})
        assert metrics["data/questions"] == 8 and metrics["data/unreadable"] == 1
        got = {row["question_id"]: row for row in json.loads(out.read_text())}
        assert list(got) == [q.question_id for q in questions if "broken" not in q.video]  # file order

        # the reference: each question alone, from its own decode and encode
        clips = ClipDataset([Sample(q.video, "video") for q in questions], num_frames=v.num_frames,
                            transform=transform, train=False, text="none")  # fmt: skip
        answer_tokens = tokenizer([normalize_answer(a) for a in ANSWERS], padding=True, return_tensors="pt")
        length = model.cfg.caption.max_length
        with torch.no_grad():
            for i, q in enumerate(questions):
                if q.question_id not in got:
                    continue
                clip = model.encode_video(clips[i]["pixels"][None])
                t = tokenizer([q.question], truncation=True, max_length=16, return_tensors="pt")
                question = model.encode_text(t["input_ids"], t["attention_mask"])
                fused = model.fuse_question(question.hidden, question.mask, clip.tokens)
                memory, mask = model.answer_memory(fused, question.mask, clip)
                ranked = rank_answers(
                    model, memory, mask, answer_tokens["input_ids"], answer_tokens["attention_mask"], 3
                )
                written = decode(tokenizer, model.caption.generate_from_memory(memory, mask, length, 1))
                classified = model.classify_answer(fused, clip).argmax(-1)
                assert got[q.question_id]["rank"] == normalize_answer(ANSWERS[int(ranked)]), q
                assert got[q.question_id]["generate"] == written[0], q
                assert got[q.question_id]["classify"] == ANSWERS[int(classified)], q
    finally:
        model.train()
