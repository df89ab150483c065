"""tools/finetune.py end to end on a tiny checkpoint and the tiny demo corpus, one test per task, plus
RecognitionTask against a direct cross-entropy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from safetensors.torch import load_file

import videovl
from tests.conftest import tiny_pretrain_args
from tools import evaluate as evaluate_tool
from tools import finetune as tool
from tools import make_shards, pretrain
from videovl.config import ConfigError, LossWeights
from videovl.data.sources import read_manifest
from videovl.data.tokenizer import load_tokenizer
from videovl.eval import runner
from videovl.tasks.recognition import RecognitionTask

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# The action config's model overrides: a new head, both decoders left out.
ACTION_OVERRIDES = {"alignment": {"enabled": False}, "caption": {"enabled": False}}


@pytest.fixture(scope="module")
def ckpt(random_checkpoint) -> Path:
    return random_checkpoint


def _args(task: str, ckpt: Path, demo: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--task",
        task,
        "--checkpoint",
        str(ckpt),
        "--config",
        str(CONFIGS / f"finetune_{task}.yaml"),
        # demo=false: the manifests are read from demo_root as it is; true would regenerate the corpus
        # there at its full default size.
        "data.demo=false",
        f"data.demo_root={demo}",
        f"train.output_dir={out}",
        "data.num_workers=0",
        "data.batch_size=8",
        "eval.batch_size=16",
        "train.tracker=null",
        "train.mixed_precision='no'",  # fp32: the test numbers must equal evaluate.py's
        *extra,
    ]


def _steps(*steps: int) -> list[str]:
    return [
        f"stages.{i}.{k}={v}" for i, n in enumerate(steps) for k, v in (("steps", n), ("warmup_steps", 1))
    ]


def _state(out: Path, step: int) -> dict[str, torch.Tensor]:
    """The task's weights in a save_state folder, keyed like the model's (the task holds it as .model)."""
    weights = load_file(str(out / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))
    return {k.removeprefix("model."): v for k, v in weights.items()}


def _changed(a: dict, b: dict, prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(a[k], b[k]) for k in keys)


def test_action_probe_then_full_fine_tune_resumed(ckpt, tiny_demo, tmp_path):
    out = tmp_path / "action"
    args = _args("action", ckpt, tiny_demo, out, *_steps(3, 2), "--label-smoothing", "0.2")
    probed = tool.main([*args, "--stop-after-steps", "3"])  # the probe stage, then stop
    assert {"val/action/top1", "val/action/top5"} <= probed.keys()
    assert (out / "classes.txt").is_file()
    metrics = tool.main([*args, "--resume", "latest"])
    assert {"test/action/top1", "test/action/top5", "test/action/mean_class_acc"} <= metrics.keys()
    assert all(0 <= metrics[k] <= 100 for k in metrics)

    # The head starts from what the tool's seed gives it; the towers from the checkpoint.
    set_seed(0)
    start, _ = videovl.load_checkpoint(ckpt, num_classes=8, **ACTION_OVERRIDES)
    start = {k: v for k, v in start.state_dict().items()}
    probe, full = _state(out, 3), _state(out, 5)
    assert _changed(start, probe, "action_head.")
    for frozen in ("visual.", "text.", "visual_proj.", "text_proj.", "logit_scale"):
        assert not _changed(start, probe, frozen), f"the linear probe changed {frozen}"
    assert _changed(probe, full, "visual.") and _changed(probe, full, "action_head.")

    # The fine-tuned model: the head, its class list (sorted labels) and no decoders.
    model, cfg = videovl.load_checkpoint(out / "model")
    classes = (out / "model" / "classes.txt").read_text().splitlines()
    assert classes == sorted({s.label for s in read_manifest(tiny_demo / "video_train.jsonl")})
    assert model.action_head.fc.out_features == len(classes) == cfg.model.num_classes == 8
    assert model.alignment is None and model.caption is None
    assert cfg.data.num_frames == 4  # inherited from the pretraining checkpoint
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, full[k], rtol=0, atol=0, msg=k)

    # evaluate.py --mode head reads the same class order: the same test numbers.
    evaluated = evaluate_tool.main(
        ["--checkpoint", str(out / "model"), "--task", "action", "--mode", "head", "--num-workers", "0",
         "--manifest", str(tiny_demo / "video_test.jsonl")]
    )  # fmt: skip
    for k in ("action/top1", "action/top5"):
        assert evaluated[k] == pytest.approx(metrics[f"test/{k}"])

    # Another label set in the same folder is refused rather than silently renumbered.
    (out / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="other classes"):
        tool.main([*args, "--resume", "latest"])


def test_retrieval_fine_tune(ckpt, tiny_demo, tmp_path):
    out = tmp_path / "retrieval"
    metrics = tool.main(_args("retrieval", ckpt, tiny_demo, out, *_steps(2), "data.val_manifest=null"))
    assert {"test/t2v/R@1", "test/v2t/R@5", "test/frame/t2v/R@1"} <= metrics.keys()
    before = load_file(str(ckpt / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    assert _changed(before, after, "visual.") and _changed(before, after, "text.")
    model, _ = videovl.load_checkpoint(out / "model")
    assert model.action_head is None and model.alignment is not None


def test_caption_fine_tune_trains_the_decoder_only(ckpt, tiny_demo, tmp_path, monkeypatch, capsys):
    scored = []

    def fake_scorer(hypotheses, references):  # pycocoevalcap itself is tested in test_captioning_metrics
        scored.append((hypotheses, references))
        return {"caption/CIDEr": 12.5, "caption/BLEU-4": 3.0}

    monkeypatch.setattr(runner, "score_captions", fake_scorer)
    out = tmp_path / "caption"
    metrics = tool.main(_args("caption", ckpt, tiny_demo, out, *_steps(2), "--score-captions", "3"))
    assert "val/caption_loss=" in capsys.readouterr().out  # validated at the end of the stage
    assert torch.isfinite(torch.tensor(metrics["test/caption_loss"])) and metrics["test/caption_ppl"] > 1
    assert metrics["test/caption/CIDEr"] == 12.5
    test_set = read_manifest(tiny_demo / "video_test.jsonl")[:3]
    assert [refs for refs in scored[0][1].values()] == [s.captions for s in test_set]
    assert len(json.loads((out / "captions_test.json").read_text())) == 3
    before = load_file(str(ckpt / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    assert _changed(before, after, "caption.") and _changed(before, after, "visual.")
    for frozen in ("text.", "text_proj.", "visual_proj.", "logit_scale"):
        assert not _changed(before, after, frozen), frozen

    # Without a scorer (no Java, say) the run still ends with its losses.
    def broken(hypotheses, references):
        raise RuntimeError("java is not installed")

    monkeypatch.setattr(runner, "score_captions", broken)
    args = _args("caption", ckpt, tiny_demo, tmp_path / "again", *_steps(1), "data.val_manifest=null")
    metrics = tool.main([*args, "--score-captions", "2"])
    assert "test/caption_loss" in metrics and not any("CIDEr" in k for k in metrics)


def test_config_errors_name_the_fix(ckpt, tiny_demo, tmp_path):
    with pytest.raises(ConfigError, match="video-label or image-label"):
        tool.main(_args("action", ckpt, tiny_demo, tmp_path, "stages.0.sources.0.kind=video-text"))
    with pytest.raises(ConfigError, match="architecture comes from the checkpoint"):
        tool.main(_args("retrieval", ckpt, tiny_demo, tmp_path, "model.name=demo"))
    with pytest.raises(ConfigError, match="losses.caption 0"):
        tool.main(_args("caption", ckpt, tiny_demo, tmp_path, "stages.0.losses.caption=0"))
    with pytest.raises(SystemExit):
        tool.main(_args("retrieval", ckpt, tiny_demo, tmp_path, "--label-smoothing", "0.3"))


@pytest.mark.slow
def test_action_on_two_cpu_processes(ckpt, tiny_demo, tmp_path):
    # Validation is sharded inside the loop; the test pass runs after the loop has ended the process group.
    out = tmp_path / "action"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29617", str(ROOT / "tools" / "finetune.py"), "--cpu",
           "--metrics-out", str(tmp_path / "m.json"),
           *_args("action", ckpt, tiny_demo, out, *_steps(1, 1))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stdout and "val/action/top1=" in proc.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0 <= metrics["test/action/top1"] <= 100
    assert (out / "model" / "classes.txt").read_text().count("\n") == 8


# ------------------------------------------------------------------------------------ RecognitionTask


def test_recognition_task_is_smoothed_cross_entropy_of_the_head():
    torch.manual_seed(0)
    model = videovl.create_model(
        "test", num_classes=5, alignment={"enabled": False}, caption={"enabled": False}
    )
    task = RecognitionTask(model, label_smoothing=0.1)
    batch = {"pixels": torch.randn(3, 3, 4, 32, 32), "labels": torch.tensor([0, 4, 2])}
    out = task(batch, LossWeights())
    logits = model.action_head(model.encode_video(batch["pixels"]).clip)
    expected = F.cross_entropy(logits, batch["labels"], label_smoothing=0.1)
    torch.testing.assert_close(out["loss"], expected)
    assert out["action_acc"] == (logits.argmax(-1) == batch["labels"]).float().mean()
    out["loss"].backward()
    assert model.action_head.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.visual.parameters())  # full fine-tuning reaches the encoder
    with pytest.raises(ValueError, match="without a label"):
        task({"pixels": batch["pixels"], "labels": torch.tensor([0, -1, 2])})
    with pytest.raises(ConfigError, match="num_classes"):
        RecognitionTask(videovl.create_model("test", caption={"enabled": False}))


def _token_ids(manifests: list[Path], tokenizer) -> set[int]:
    texts = {c for m in manifests for s in read_manifest(m) for c in s.captions}
    tokens = tokenizer(sorted(texts))["input_ids"]
    return {i for row in tokens for i in row}


def test_a_corpus_vocabulary_is_its_stage_texts_and_a_later_stage_sets_its_own(tiny_demo, tmp_path, capsys):
    out = tmp_path / "pretrain"
    none = ["data.val_manifest=null", "data.val_image_manifest=null", "data.test_manifest=null"]
    pretrain.main(tiny_pretrain_args(tiny_demo, out, *none, "train.caption_vocab=corpus"))
    model, _ = videovl.load_checkpoint(out / "model")
    tokenizer = load_tokenizer(model.cfg.text)
    # the heads stage's texts (the demo's caption loss is there): every caption of its video manifest
    want = _token_ids([tiny_demo / "video_train.jsonl"], tokenizer)
    vocab = model.caption.vocabulary()
    assert vocab is not None and set(vocab.tolist()) == want
    assert f"caption vocabulary: {len(want)} of 30,522 tokens" in capsys.readouterr().out
    seqs = model.caption.generate(torch.randn(2, 16, model.cfg.vision.width), max_length=8)
    assert set(seqs.flatten().tolist()) <= want | {model.caption.pad_id}

    # a caption fine-tune speaks its own stage's tokens, or every token again with the default "full"
    tuned = {}
    for choice in ("corpus", "full"):
        args = _args("caption", out / "model", tiny_demo, tmp_path / choice, *_steps(1), *none[:1],
                     "data.test_manifest=null", f"train.caption_vocab={choice}")  # fmt: skip
        tool.main(args)
        tuned[choice] = videovl.load_checkpoint(tmp_path / choice / "model")[0].caption.vocabulary()
    assert set(tuned["corpus"].tolist()) == _token_ids([tiny_demo / "video_train.jsonl"], tokenizer)
    assert tuned["full"] is None


def test_a_corpus_vocabulary_over_shards_is_refused_before_step_one(tiny_demo, tmp_path):
    shards_args = [str(tiny_demo / "video_train.jsonl"), str(tmp_path / "shards"), "--samples-per-shard=32"]
    make_shards.main(shards_args)
    shards = str(tmp_path / "shards" / "{00000..00001}.tar")
    args = tiny_pretrain_args(tiny_demo, tmp_path / "run", "train.caption_vocab=corpus",
                              f"stages.3.sources=[{{shards: '{shards}', kind: video-text}}]")  # fmt: skip
    with pytest.raises(ConfigError, match=r"stages.3 \('heads'\): train.caption_vocab is 'corpus'.*shard"):
        pretrain.main(args)
    assert not (tmp_path / "run" / "checkpoints").exists()
