"""Question-answering data: ActivityNet-QA on the real files, the MSRVTT-QA layout, the answer vocabulary."""

import json
from collections import Counter

import pytest

from videovl.data.annotations.activitynet_qa import QA_TYPES, read_activitynet_qa
from videovl.data.annotations.msrvtt_qa import question_type, read_answer_list, read_msrvtt_qa
from videovl.data.answers import AnswerVocab, normalize_answer
from videovl.data.sources import QASample

# ActivityNet-QA test, counted once from the shared files (they match the MILVLG counts in SOURCES.md).
TEST_TYPES = {"motion": 800, "spatial": 800, "temporal": 800, "yes_no": 2094, "colour": 697, "object": 318,
              "location": 386, "number": 606, "other": 1499}  # fmt: skip


@pytest.fixture(scope="module")
def anet_qa(shared_dir):
    return shared_dir / "annotations" / "activitynet_qa"


@pytest.fixture(scope="module")
def anet_splits(anet_qa):
    return {split: read_activitynet_qa(anet_qa, split) for split in ("train", "val", "test")}


@pytest.mark.parametrize(
    "split, questions, videos", [("train", 32000, 3200), ("val", 18000, 1800), ("test", 8000, 800)]
)
def test_activitynet_qa_counts(anet_splits, split, questions, videos):
    samples, report = anet_splits[split]
    assert report.counts == {"questions": questions, "videos": videos} and not report.problems
    assert len(samples) == questions and len({s.question_id for s in samples}) == questions
    assert len({s.video_id for s in samples}) == videos
    assert all(s.question and s.answer and s.qtype in QA_TYPES for s in samples)


def test_activitynet_qa_test_types_and_answers(anet_splits):
    samples, _ = anet_splits["test"]
    assert Counter(s.qtype for s in samples) == TEST_TYPES
    assert {s.answer for s in samples if s.qtype == "yes_no"} == {"yes", "no"}  # the type codes line up
    assert all(normalize_answer(s.answer).isdigit() for s in samples if s.qtype == "number")
    assert {"black", "white", "red"} <= {s.answer for s in samples if s.qtype == "colour"}
    assert all(s.question.startswith("what") for s in samples if s.qtype == "motion")
    assert samples[0] == QASample(
        "v_1QIUV7WYKXg_3", "v_1QIUV7WYKXg.mp4", "is the athlete wearing trousers", "no", "yes_no",
        video_id="1QIUV7WYKXg",
    )  # fmt: skip
    assert len({normalize_answer(s.answer) for s in samples}) == 2102  # 2,103 distinct as written


def test_activitynet_qa_answer_vocabulary_coverage(anet_splits, tmp_path):
    train = [s.answer for s in anet_splits["train"][0]]
    vocab = AnswerVocab.build(train)
    assert len(vocab) == 1500 and vocab.answers[:3] == ("yes", "no", "1")
    assert list(vocab.counts) == sorted(vocab.counts, reverse=True)
    test = [s.answer for s in anet_splits["test"][0]]
    assert sum(a in vocab for a in test) == 6423  # 80.3 % of the test questions can be answered
    assert sum(a in vocab for a in (s.answer for s in anet_splits["val"][0])) == 15166  # 84.3 %
    assert vocab.coverage(test) == pytest.approx(6423 / 8000)
    vocab.save(tmp_path / "answers.json")
    assert AnswerVocab.load(tmp_path / "answers.json") == vocab
    assert AnswerVocab.build(reversed(train)) == vocab  # order of the training answers does not matter


def test_activitynet_qa_video_lookup_and_bad_rows(tmp_path):
    questions = [
        {"video_name": "aaa", "question": "what is he doing ", "question_id": "v_aaa_0"},
        {"video_name": "aaa", "question": "is it indoors", "question_id": "v_aaa_1"},
        {"video_name": "bbb", "question": "how many people", "question_id": "v_bbb_0"},
        {"video_name": "ccc", "question": "what colour", "question_id": "v_ccc_0"},
        {"video_name": "ccc", "question": "unanswered", "question_id": "v_ccc_1"},
        {"video_name": "ddd", "question": "odd type", "question_id": "v_ddd_0"},
    ]
    answers = [
        {"answer": "surf", "type": 0, "question_id": "v_aaa_0"},
        {"answer": "no", "type": 3, "question_id": "v_aaa_1"},
        {"answer": "2", "type": 7, "question_id": "v_bbb_0"},
        {"answer": "red", "type": 4, "question_id": "v_ccc_0"},
        {"answer": "x", "type": 9, "question_id": "v_ddd_0"},
        {"answer": "y", "type": 8, "question_id": "v_zzz_0"},
    ]
    (tmp_path / "test_q.json").write_text(json.dumps(questions))
    (tmp_path / "test_a.json").write_text(json.dumps(answers))
    (tmp_path / "videos" / "sub").mkdir(parents=True)
    (tmp_path / "videos" / "v_aaa.mkv").touch()
    (tmp_path / "videos" / "sub" / "bbb.mp4").touch()
    samples, report = read_activitynet_qa(tmp_path, "test", tmp_path / "videos")
    assert [s.question_id for s in samples] == ["v_aaa_0", "v_aaa_1", "v_bbb_0", "v_ccc_0"]
    assert [s.qtype for s in samples] == ["motion", "yes_no", "number", "colour"]
    assert samples[0].question == "what is he doing" and samples[0].video.endswith("v_aaa.mkv")
    assert samples[2].video.endswith("sub/bbb.mp4") and samples[3].video.endswith("v_ccc.mp4")
    assert report.missing == ["ccc"]
    assert report.counts == {"questions": 4, "videos": 3, "missing_videos": 1, "questions_without_video": 1}
    assert len(report.problems) == 3 and {p.split(":")[0] for p in report.problems} == {
        "v_ccc_1", "v_ddd_0", "v_zzz_0"
    }  # fmt: skip
    (tmp_path / "val_q.json").write_text("[]")
    (tmp_path / "val_a.json").write_text("")
    empty, report = read_activitynet_qa(tmp_path, "val")
    assert empty == [] and report.counts["questions"] == 0 and report.problems == ["val: no questions"]
    with pytest.raises(FileNotFoundError, match="train_q.json"):
        read_activitynet_qa(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        read_activitynet_qa(tmp_path, "dev")


def test_msrvtt_qa_layout(tmp_path):
    rows = [
        {"video": "video7010.mp4", "question": "what is a man doing?", "answer": "sing", "question_id": 0},
        {"video": "video7010.mp4", "question": "Who is singing?", "answer": "the man", "question_id": 1},
        {"video": "video7011.mp4", "question": "how many cats are there?", "answer": "two", "question_id": 2},
        {"video": "video7012.mp4", "question": "where is it?", "answer": "kitchen", "question_id": 3},
        {"video": "video7012.mp4", "question": "is it?", "answer": "zebra", "question_id": 4},
        {"video": "video7012.mp4", "question": "no answer"},
        {"video": "video7012.mp4", "question": "again", "answer": "x", "question_id": 3},
    ]
    (tmp_path / "test.json").write_text(json.dumps(rows))
    (tmp_path / "answer_list.json").write_text(json.dumps(["sing", "Man", "2", "kitchen"]))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "video7010.mp4").touch()
    (tmp_path / "videos" / "video7011.mp4").touch()
    samples, report = read_msrvtt_qa(
        tmp_path / "test.json", tmp_path / "videos", answer_list=tmp_path / "answer_list.json"
    )
    assert [s.question_id for s in samples] == ["0", "1", "2", "3", "4"]
    assert [s.qtype for s in samples] == ["what", "who", "how", "where", "other"]
    assert samples[0].video == str(tmp_path / "videos" / "video7010.mp4")
    assert samples[0].video_id == "video7010.mp4"
    assert report.counts == {"questions": 5, "videos": 3, "answer_list": 4, "answers_outside_list": 1,
                             "missing_videos": 1, "questions_without_video": 2}  # fmt: skip
    assert report.missing == [str(tmp_path / "videos" / "video7012.mp4")]
    assert "4: answer 'zebra' is not in the answer list" in report.problems  # "the man", "two" normalise in
    assert sum("left out" in p for p in report.problems) == 2
    assert read_answer_list(tmp_path / "answer_list.json") == ["sing", "Man", "2", "kitchen"]
    # without a video root, paths are relative to the question file's folder and nothing is checked
    samples, report = read_msrvtt_qa(tmp_path / "test.json")
    assert samples[0].video == str(tmp_path / "video7010.mp4") and "missing_videos" not in report.counts
    # JSON Lines with a "type" field, and an empty file
    (tmp_path / "qa.jsonl").write_text(
        "\n".join(json.dumps(r | {"type": "digit"}) for r in rows[:2]) + "\n\n"
    )
    assert [s.qtype for s in read_msrvtt_qa(tmp_path / "qa.jsonl")[0]] == ["digit", "digit"]
    (tmp_path / "empty.json").write_text("")
    empty, report = read_msrvtt_qa(tmp_path / "empty.json")
    assert empty == [] and report.problems == ["empty.json: no questions"]
    (tmp_path / "broken.jsonl").write_text('{"video": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        read_msrvtt_qa(tmp_path / "broken.jsonl")


def test_question_type():
    assert question_type("What is the man doing?") == "what"
    assert question_type("  where is this") == "where"
    assert question_type("does he sing") == "other" and question_type("") == "other"


def test_answer_vocabulary_ties_save_and_foreign_lists(tmp_path):
    vocab = AnswerVocab.build(["e", "b", "The dog", "dog", "c", "c", "Yes!", "yes", "yes", "the"], top_n=4)
    assert vocab.answers == ("yes", "c", "dog", "b") and vocab.counts == (3, 2, 2, 1)  # ties: alphabetical
    assert vocab.index("A dog.") == 2 and vocab.index("e") is None and "YES" in vocab
    vocab.save(tmp_path / "v.json")
    assert AnswerVocab.load(tmp_path / "v.json") == vocab
    (tmp_path / "list.json").write_text(json.dumps(["Two", "2", "red"]))
    assert AnswerVocab.load(tmp_path / "list.json").answers == ("2", "red")
    (tmp_path / "bad.json").write_text('{"answers": 3}')
    with pytest.raises(ValueError, match="bad.json"):
        AnswerVocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="top_n"):
        AnswerVocab.build(["a"], top_n=0)
    with pytest.raises(ValueError, match="repeat"):
        AnswerVocab(("a", "a"))
