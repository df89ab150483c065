"""Question answering end to end on a tiny checkpoint and the tiny demo corpus: tools/finetune.py --task qa
(stopped and resumed), tools/evaluate.py --task qa with each protocol on the demo's question file, the
activitynet-qa benchmark on the shared annotation files and a msrvtt-qa-layout folder, with videos missing."""

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import write_test_video
from safetensors.torch import load_file

import videovl
from tools import evaluate as evaluate_tool
from tools import finetune as tool
from videovl.config import Config, ConfigError
from videovl.data.annotations.msrvtt_qa import read_msrvtt_qa
from videovl.data.answers import AnswerVocab, normalize_answer
from videovl.data.tokenizer import load_tokenizer
from videovl.eval.qa import qa_accuracy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(random_checkpoint) -> Path:
    return random_checkpoint


def _args(ckpt: Path, demo: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--task", "qa", "--checkpoint", str(ckpt), "--config", str(ROOT / "configs" / "finetune_qa.yaml"),
        "data.demo=false", f"data.demo_root={demo}", f"train.output_dir={out}", "data.num_workers=0",
        "data.batch_size=8", "eval.batch_size=32", "train.tracker=null", "train.mixed_precision='no'",
        "stages.0.steps=2", "stages.0.warmup_steps=1", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def qa_run(ckpt, tiny_demo, tmp_path_factory):
    """Fine-tuned for 2 steps: one, a stop, then --resume latest; returns (out_dir, metrics, the step-1
    weights, what the resumed run printed)."""
    out = tmp_path_factory.mktemp("finetune") / "qa"
    args = _args(ckpt, tiny_demo, out)
    tool.main([*args, "--stop-after-steps", "1"])
    step1 = load_file(str(out / "checkpoints" / "step_00000001" / "model.safetensors"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = tool.main([*args, "--resume", "latest"])
    return out, metrics, step1, printed.getvalue()


def test_finetune_resumes_and_tests_every_protocol(qa_run, tiny_demo):
    out, metrics, step1, printed = qa_run
    # the stage's summary line carries the validation figures (the overall accuracy of each protocol)
    summary = next(line for line in printed.splitlines() if line.startswith("end of stage 'qa'"))
    assert "no metrics" not in summary
    assert re.search(r"val/qa/rank/acc=\d+\.\d", summary) and re.search(r"val/qa/classify/acc=\d", summary)
    assert "/acc/" not in summary  # the per-type accuracies stay in the metrics, not on the line
    for p in ("rank", "generate", "classify"):
        keys = {f"test/qa/{p}/acc"} | {f"test/qa/{p}/acc/{t}" for t in ("digit", "first", "second", "order")}
        assert keys <= metrics.keys(), p
        assert all(0 <= metrics[k] <= 100 for k in keys)
    test_questions = read_msrvtt_qa(tiny_demo / "qa_test.jsonl")[0]
    assert metrics["test/data/questions"] == len(test_questions) and metrics["test/data/missing"] == 0
    # the vocabulary: every training answer (16 < 1500), beside the model and in the run folder
    vocab = AnswerVocab.load(out / "model" / "answers.json")
    train = read_msrvtt_qa(tiny_demo / "qa_train.jsonl")[0]
    assert set(vocab.answers) == {normalize_answer(q.answer) for q in train}
    assert AnswerVocab.load(out / "answers.json").answers == vocab.answers
    model, cfg = videovl.load_checkpoint(out / "model")
    assert cfg.model.qa.enabled and cfg.model.qa.num_answers == len(vocab)
    assert model.qa.classifier[-1].out_features == len(vocab)
    assert cfg.data.num_frames == 4  # inherited from the pretraining checkpoint
    # the resumed run trained on: step 2 differs from step 1 in the QA head
    final = load_file(str(out / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert not torch.equal(final["model.qa.question_proj.weight"], step1["model.qa.question_proj.weight"])
    assert torch.equal(
        final["model.visual.patch_embed.proj.weight"], step1["model.visual.patch_embed.proj.weight"]
    )


def _evaluate(model_dir: Path, *args: str) -> dict[str, float]:
    return evaluate_tool.main(["--checkpoint", str(model_dir), "--task", "qa", "--num-workers", "0", *args])


def test_evaluate_protocols_score_their_predictions(qa_run, tiny_demo, tmp_path):
    out, metrics, _, _ = qa_run
    preds = tmp_path / "predictions.json"
    manifest = str(tiny_demo / "qa_test.jsonl")
    scored = _evaluate(
        out / "model", "--manifest", manifest, "--protocol", "all", "--predictions", str(preds)
    )
    # the tool and the end of fine-tuning score the same model the same way (both fp32)
    for k in ("qa/rank/acc", "qa/generate/acc", "qa/classify/acc"):
        assert scored[k] == pytest.approx(metrics[f"test/{k}"], abs=1e-6), k
    rows = json.loads(preds.read_text())
    questions = read_msrvtt_qa(tiny_demo / "qa_test.jsonl")[0]
    assert len(rows) == len(questions)
    for p in ("rank", "generate", "classify"):
        assert qa_accuracy({r["question_id"]: r[p] for r in rows}, questions, p) == {
            k: v for k, v in scored.items() if k.startswith(f"qa/{p}/")
        }

    # A classifier forced to answer "yes" (and a decoder forced to start every answer with it): order
    # questions are right exactly when their answer is yes (half of them), the others never.
    model, _ = videovl.load_checkpoint(out / "model")
    vocab = AnswerVocab.load(out / "model" / "answers.json")
    forced = tmp_path / "forced"
    with torch.no_grad():
        model.qa.classifier[-1].bias[vocab.index("yes")] = 1e4
        yes = load_tokenizer(model.cfg.text).convert_tokens_to_ids("yes")
        model.caption.lm_head.bias[yes] = 1e4
    cfg = Config(model=model.cfg)
    cfg.data.num_frames = 4
    videovl.save_checkpoint(model, cfg, forced, extra_files=load_tokenizer(model.cfg.text).save_pretrained)
    vocab.save(forced / "answers.json")
    got = _evaluate(forced, "--manifest", manifest, "--protocol", "rank", "--protocol", "classify")
    yes_share = 100 * sum(q.answer == "yes" for q in questions) / len(questions)
    for p in ("rank", "classify"):
        assert got[f"qa/{p}/acc"] == pytest.approx(yes_share)
        assert got[f"qa/{p}/acc/order"] == 50.0 and got[f"qa/{p}/acc/digit"] == 0.0
    assert "qa/generate/acc" not in got
    # the page: the questions with the answers given, wrong ones first
    page = tmp_path / "qa.html"
    _evaluate(forced, "--manifest", manifest, "--html", str(page), "--html-queries", "6")
    html = page.read_text()
    verdicts = re.findall(r"<section class='item answer (correct|incorrect)'>", html)
    wrong = sum(q.answer != "yes" for q in questions)
    assert len(verdicts) == min(6, len(questions))
    assert verdicts == sorted(verdicts, key=lambda v: v == "correct")  # wrong ones first
    assert verdicts.count("incorrect") == min(6, wrong)
    assert "qa/rank" in html and html.count("answer given: <b class='given'>yes</b>") == len(verdicts)
    blank = _evaluate(forced, "--manifest", manifest, "--blank-video")
    assert blank["data/blank_video"] == 1 and blank["qa/rank/acc"] == pytest.approx(yes_share)


def test_errors_name_the_fix(ckpt, qa_run, tiny_demo, tmp_path):
    manifest = str(tiny_demo / "qa_test.jsonl")
    with pytest.raises(ConfigError, match="no question-answering head: fine-tune one with"):
        _evaluate(ckpt, "--manifest", manifest, "--answer-list", str(tiny_demo / "qa_answers.json"))
    with pytest.raises(SystemExit):  # --protocol is a qa flag
        evaluate_tool.parse_args(
            ["--checkpoint", "x", "--task", "retrieval", "--manifest", "m", "--protocol", "rank"]
        )
    with pytest.raises(ConfigError, match="question answering trains losses.qa"):
        tool.main(_args(ckpt, tiny_demo, tmp_path / "a", "stages.0.losses.contrastive=1.0"))
    with pytest.raises(ConfigError, match="kind video-qa"):
        tool.main(_args(ckpt, tiny_demo, tmp_path / "b", "stages.0.sources.0.kind=video-text",
                        "stages.0.sources.0.manifest=demo:video_train.jsonl"))  # fmt: skip
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="no usable question"):
        tool.main(_args(ckpt, tiny_demo, tmp_path / "c", f"stages.0.sources.0.manifest={empty}"))
    # an empty question file to evaluate: counted, not a crash
    got = _evaluate(qa_run[0] / "model", "--manifest", str(empty))
    assert got["data/questions"] == 0 and got["qa/rank/questions"] == 0


def test_activitynet_qa_benchmark_reports_missing_videos(qa_run, shared_dir, tmp_path):
    ann = shared_dir / "annotations" / "activitynet_qa"
    names = list(dict.fromkeys(q["video_name"] for q in json.loads((ann / "test_q.json").read_text())))[:3]
    root = tmp_path / "videos"
    root.mkdir()
    write_test_video(root / f"v_{names[0]}.mp4")
    write_test_video(root / f"{names[1]}.mp4", num_frames=20)
    (root / f"v_{names[2]}.mp4").write_bytes(b"\x00" * 100)  # present but unreadable
    test_q = json.loads((ann / "test_q.json").read_text())
    asked = [q for q in test_q if q["video_name"] in names[:2]]
    got = _evaluate(qa_run[0] / "model", "--benchmark", "activitynet-qa", "--annotations", str(ann),
                    "--video-root", str(root), "--protocol", "all", "--num-frames", "1")  # fmt: skip
    assert got["data/missing"] == 800 - 3 and got["data/unreadable"] == 1
    assert got["data/questions"] == len(asked) and got["data/videos"] == 2
    on_present = sum(q["video_name"] in names for q in test_q)
    assert got["data/questions_without_video"] == 8000 - on_present
    types = {k.rsplit("/", 1)[1] for k in got if k.startswith("qa/rank/acc/")}
    assert types and types <= {"motion", "spatial", "temporal", "yes_no", "colour", "object", "location",
                               "number", "other"}  # fmt: skip


def test_msrvtt_qa_layout_benchmark(qa_run, tiny_demo, tmp_path):
    ann = tmp_path / "msrvtt_qa"
    ann.mkdir()
    rows = [
        {"video": "video7010.mp4", "question": "what is a man doing?", "answer": "left", "question_id": 0},
        {"video": "video7010.mp4", "question": "who talks?", "answer": "man", "question_id": 1},
        {"video": "video7011.mp4", "question": "what is shown?", "answer": "3", "question_id": 2},
    ]
    (ann / "test.json").write_text(json.dumps(rows))
    (ann / "answer_list.json").write_text(json.dumps(["left", "3", "yes"]))
    root = tmp_path / "videos"
    root.mkdir()
    (root / "video7010.mp4").write_bytes((tiny_demo / "videos/test/000000.mp4").read_bytes())
    got = _evaluate(qa_run[0] / "model", "--benchmark", "msrvtt-qa", "--annotations", str(ann),
                    "--video-root", str(root))  # fmt: skip
    assert (
        got["data/questions"] == 2 and got["data/missing"] == 1 and got["data/questions_without_video"] == 1
    )
    assert (
        got["data/answer_list"] == 3 and got["data/answers_outside_list"] == 1
    )  # "man": the list's, not ours
    assert {"qa/rank/acc/what", "qa/rank/acc/who"} <= got.keys() and got["qa/rank/acc/who"] == 0.0
