"""The main job end to end on a tiny model: every stage, metrics, checkpoints, resume, failures."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import videovl.train.data as train_data
from tests.conftest import tiny_pretrain_args
from tools import evaluate as evaluate_tool
from tools import pretrain as tool
from videovl import load_checkpoint
from videovl.config import ConfigError, load_config
from videovl.data.sources import read_manifest, write_manifest
from videovl.tasks.pretrain import PretrainTask

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_runs_and_the_run_reports_test_metrics(tiny_demo, tmp_path, capsys):
    out = tmp_path / "run"
    metrics = tool.main(
        tiny_pretrain_args(
            tiny_demo,
            out,
            "train.log_every=1",
            "train.keep_checkpoints=3",
            "--metrics-out",
            str(tmp_path / "m.json"),
        )
    )
    # stderr is not a terminal here: progress is whole lines (one a step at log_every 1), no redraws
    captured = capsys.readouterr()
    err = captured.err
    assert "\r" not in err
    assert "image: 1/2 (50%) step" in err and "image: 2/2 (100%) step" in err and "loss=" in err
    # each rate line gives the share of the step spent waiting for data
    shares = [int(m) for m in re.findall(r"data=(\d+)%", err)]
    assert len(shares) >= 4 and all(0 <= v <= 100 for v in shares)
    for key in ("test/t2v/R@1", "test/v2t/R@5", "test/t2v/MdR", "test/frame/t2v/R@1"):
        assert key in metrics
    # the demo config's zero-shot motion on the test split, with the prompt it names, at the end of the run
    assert "prompts ['the digit moves {label}']" in captured.out
    assert 0 <= metrics["test/action/top1"] <= 100 and metrics["test/action/order_pair_samples"] > 0
    assert 0 <= metrics["test/action/order_pair_acc"] <= 100
    assert 0 <= metrics["test/t2v/R@1"] <= 100 and metrics["test/t2v/MdR"] >= 1
    assert json.loads((tmp_path / "m.json").read_text()) == pytest.approx(metrics)
    resolved = load_config(out / "config.yaml")  # the resolved config next to the outputs
    assert resolved.stages[0].steps == 2 and resolved.model.vision.width == 32
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step_00000004", "step_00000006", "step_00000008"]  # 4 stages, 3 kept
    assert (ckpts[-1] / "config.yaml").is_file()  # the config inside every checkpoint
    joint, text, align = (_weights(c) for c in ckpts)
    moved = lambda a, b, prefix: [k for k in a if k.startswith(prefix) and not torch.equal(a[k], b[k])]  # noqa: E731
    # the third stage trains the text adapter and the projections against the frozen towers
    assert not moved(joint, text, ("model.visual.", "model.text.")) and moved(
        joint, text, "model.text_adapter."
    )
    assert moved(joint, text, "model.text_proj.") and moved(joint, text, "model.visual_proj.")
    # the last trains the alignment decoder alone on the frozen dual encoder
    towers = [k for k in text if k.startswith(("model.visual", "model.text", "model.logit_scale"))]
    assert towers and all(torch.equal(text[k], align[k]) for k in towers)
    assert moved(text, align, "model.alignment.")
    model, cfg = load_checkpoint(out / "model")
    assert cfg.model.text.vocab_size == model.caption.lm_head.out_features
    x = torch.zeros(1, 3, 8, 32, 32)
    assert model.encode_video(x).clip.shape == (1, 32)


def test_the_validation_figure_of_the_last_step_is_what_evaluate_prints_for_the_checkpoint(
    tiny_demo, tmp_path, caplog
):
    # The validation split holds a file that does not decode and one that is absent: both sides leave
    # them out and count them.
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 10)
    rows = [
        {"video": s.path, "caption": s.captions, "id": s.id}
        for s in read_manifest(tiny_demo / "video_val.jsonl")
    ]
    rows += [
        {"video": "corrupt.mp4", "caption": "unreadable"},
        {"video": "absent.mp4", "caption": "never there"},
    ]
    val = tmp_path / "val.jsonl"
    write_manifest(val, rows)
    out = tmp_path / "run"
    # no test split: the run returns its last validation, taken on the weights it saves as its model
    logged = tool.main(
        tiny_pretrain_args(
            tiny_demo,
            out,
            f"data.val_manifest={val}",
            "data.val_image_manifest=null",
            "data.test_manifest=null",
        )
    )
    assert "corrupt.mp4" in caplog.text  # named in the warning
    evaluated = evaluate_tool.main(
        ["--checkpoint", str(out / "model"), "--task", "retrieval", "--manifest", str(val),
         "--num-workers", "0", "--rerank-k", "0"]
    )  # fmt: skip
    assert all(k.startswith("val/video/") for k in logged)
    figures = {k.removeprefix("val/video/"): v for k, v in logged.items()}
    assert {"t2v/R@1", "v2t/MnR", "frame/t2v/R@1", "frame/v2t/R@5"} <= figures.keys()
    assert figures["data/unreadable"] == 1 and figures["data/missing"] == 1
    assert figures["data/videos"] == len(rows) - 2
    assert figures == pytest.approx({k: evaluated[k] for k in figures}, abs=1e-6)


def test_a_stage_of_zero_steps_is_skipped_and_negative_steps_are_an_error(tiny_demo, tmp_path, monkeypatch):
    reads = []
    real = train_data.read_manifest
    monkeypatch.setattr(train_data, "read_manifest", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    out = tmp_path / "run"
    # A skipped stage's sources need not exist, nor the heads its losses would need.
    skip = [
        "stages.3.steps=0",
        "stages.3.sources.0.manifest=demo:missing.jsonl",
        "model.alignment.enabled=false",
        "model.caption.enabled=false",
    ]
    metrics = tool.main(tiny_pretrain_args(tiny_demo, out, *skip))
    assert "test/t2v/R@1" in metrics
    assert len(reads) == 4  # each source of the three stages read once: checked before step one, then used
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step_00000004", "step_00000006"]
    with pytest.raises(ConfigError, match=r"stages.1.steps is -1; expected >= 0"):
        tool.main(tiny_pretrain_args(tiny_demo, tmp_path / "bad", "stages.1.steps=-1"))


@pytest.mark.parametrize(
    "override, words",
    [
        ("stages.3.freeze=[visual, vison]", ["stages.3.freeze[1] is 'vison'", "did you mean 'visual'"]),
        (
            "stages.3.sources.0.kind=video-txt",
            ["stages.3.sources.0.kind is 'video-txt'", "mean 'video-text'"],
        ),
        (
            "stages.3.sources.0.manifest=demo:nope.jsonl",
            ["stages.3.sources.0.manifest: ", "nope.jsonl does not"],
        ),
        ("stages.3.sources.0.kind=image-text", ["stages.3.sources.0: kind 'image-text' but", "are videos"]),
        ("stages.3.sources.0.shards=/no/{0..1}.tar", ["stages.3.sources.0 needs exactly one of 'manifest'"]),
        ("stages.3.sources=[]", ["stages.3 ('heads') has no sources"]),
        (
            "stages.3.sources=[{shards: '/no/{0..1}.tar', kind: video-text}]",
            ["stages.3.sources.0.shards: none of the 2 shards"],
        ),
        ("stages.3.sources.0.manifest={tmp}/bad.jsonl", ["stages.3.sources.0.manifest: ", "bad.jsonl:2"]),
        ("model.alignment.enabled=false", ["stages.3.losses.itm=1.0 needs the alignment head"]),
        ("stages.3.mask_ratio=0.99", ["stages.3 ('heads'): mask_ratio.video is 0.99, which keeps no"]),
        ("data.test_manifest=demo:nope.jsonl", ["data.test_manifest: ", "nope.jsonl does not"]),
        ("eval.action_classes=demo:nope.txt", ["eval.action_classes: ", "nope.txt does not exist"]),
        ("eval.action_prompts=[the digit]", ["eval.action_prompts[0] is 'the digit'", "{label}"]),
        # question answering is fine-tuning's: refused before step one, not by the task at step one
        (
            "stages.3.sources=[{manifest: demo:qa_train.jsonl, kind: video-qa}]",
            ["stages.3.sources.0.kind is 'video-qa'", "trained by tools/finetune.py --task qa"],
        ),
        (
            "stages.0.sources.1={manifest: demo:qa_train.jsonl, kind: video-qa}",
            ["stages.0.sources.1.kind is 'video-qa'", "trained by tools/finetune.py --task qa"],
        ),
        (
            "stages.3.losses.qa=1.0",
            ["stages.3.losses.qa=1.0: question answering is trained by tools/finetune"],
        ),
        (
            "stages.3.losses.qa_classify=0.5",
            ["stages.3.losses.qa_classify=0.5", "set stages.3.losses.qa_classify to 0"],
        ),
    ],
)
def test_a_mistake_in_the_last_stage_fails_before_step_one_naming_the_key(
    tiny_demo, tmp_path, monkeypatch, override, words
):
    def no_step(*args, **kwargs):
        raise AssertionError("a training step ran before the configuration was checked")

    monkeypatch.setattr(PretrainTask, "forward", no_step)
    (tmp_path / "bad.jsonl").write_text('{"video": "a.mp4", "caption": "a digit"}\nnot json\n')
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        tool.main(tiny_pretrain_args(tiny_demo, out, override.replace("{tmp}", str(tmp_path))))
    for w in words:
        assert w in str(e.value)
    assert not out.exists()  # nothing written: no config, no checkpoint


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("mining", [False, True])
def test_resume_gives_the_same_weights_as_a_straight_run(tiny_demo, tmp_path, mining):
    # One stage of 4 steps: straight, and 2 steps then --resume for the other 2. With mining, the
    # neighbour table mined at step 0 travels in the checkpoint and step 2 mines again.
    common = [
        "stages=[{name: joint, steps: 4, warmup_steps: 1, video_ratio: 0.5, sources: "
        "[{manifest: 'demo:video_train.jsonl', kind: video-text}, "
        "{manifest: 'demo:image_train.jsonl', kind: image-text}], "
        "losses: {contrastive: 1.0, frame: 0.5, itm: 0.5, caption: 0.2}, "
        f"mining: {{enabled: {str(mining).lower()}, every: 2, k: 4, neighbours_per_seed: 3}}}}]",
        "data.val_manifest=null",
        "data.val_image_manifest=null",
        "data.test_manifest=null",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    tool.main(tiny_pretrain_args(tiny_demo, straight, *common))
    tool.main(tiny_pretrain_args(tiny_demo, resumed, *common, "--stop-after-steps", "2"))
    assert [p.name for p in (resumed / "checkpoints").iterdir()] == ["step_00000002"]
    tool.main(tiny_pretrain_args(tiny_demo, resumed, *common, "--resume", "latest"))
    a = _weights(straight / "checkpoints" / "step_00000004")
    b = _weights(resumed / "checkpoints" / "step_00000004")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_non_finite_loss_stops_and_names_the_step(tiny_demo, tmp_path, monkeypatch):
    import videovl.losses.contrastive as contrastive

    real = contrastive.soft_target_infonce
    calls = {"n": 0}

    def poisoned(logits, positives):
        calls["n"] += 1
        loss = real(logits, positives)
        return loss * float("nan") if calls["n"] > 1 else loss

    monkeypatch.setattr(contrastive, "soft_target_infonce", poisoned)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"non-finite loss at step 1.*contrastive_loss"):
        tool.main(tiny_pretrain_args(tiny_demo, out, "train.save_every=1"))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000001"]


def test_bad_override_is_a_clear_error(tiny_demo, tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'steps'"):
        tool.main(tiny_pretrain_args(tiny_demo, tmp_path, "stages.0.step=3"))


@pytest.mark.slow
def test_two_cpu_processes(tiny_demo, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29613",
        str(ROOT / "tools" / "pretrain.py"),
        "--cpu",
        "--metrics-out",
        str(tmp_path / "m.json"),
        *tiny_pretrain_args(tiny_demo, out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "test/t2v/R@1" in metrics
    assert "2 processes" in proc.stdout
    assert "mixed precision: no (train.mixed_precision=no)" in proc.stdout  # the config decides, and says so


def test_resume_latest_without_a_checkpoint_is_an_error_and_auto_starts_fresh(tiny_demo, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="--resume auto starts fresh"):
        tool.main(tiny_pretrain_args(tiny_demo, tmp_path / "run", "--resume", "latest"))
    tool.main(tiny_pretrain_args(tiny_demo, tmp_path / "run", "--resume", "auto", "--stop-after-steps", "1"))
    assert "--resume auto: no complete checkpoint" in capsys.readouterr().out


def test_a_locked_text_tower_runs_once_a_caption_with_the_weights_of_running_every_step(
    tiny_demo, tmp_path, monkeypatch
):
    from videovl.models.text import TextEncoder

    computed = []
    run_tower = TextEncoder._forward

    def counting(self, input_ids, attention_mask):
        if torch.is_grad_enabled():  # training steps (evaluation runs without gradients)
            computed.append(len(input_ids))
        return run_tower(self, input_ids, attention_mask)

    monkeypatch.setattr(TextEncoder, "_forward", counting)
    common = [
        "data.val_manifest=null",
        "data.val_image_manifest=null",
        "data.test_manifest=null",
        "stages.0.steps=6",
        "stages.1.steps=6",
        "stages.2.steps=3",
    ]
    weights, rows = {}, {}
    for cache in (0, 20_000):
        computed.clear()
        out = tmp_path / f"cache{cache}"
        tool.main(tiny_pretrain_args(tiny_demo, out, *common, f"train.locked_text_cache={cache}"))
        weights[cache] = load_file(str(out / "model" / "model.safetensors"))
        rows[cache] = sum(computed)
    assert rows[20_000] < rows[0]  # captions seen before were not run again
    for k, v in weights[0].items():
        torch.testing.assert_close(weights[20_000][k], v, rtol=1e-4, atol=1e-5, msg=k)
