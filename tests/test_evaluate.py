"""tools/evaluate.py end to end on a tiny checkpoint and the tiny demo corpus, against straightforward
recomputations: embeddings one video at a time, full score matrices, per-view softmax averages."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import videovl
from tests.conftest import write_test_video
from tests.test_retrieval_metrics import naive_metrics
from tools import evaluate as tool
from videovl.config import Config
from videovl.data.annotations.kinetics import clip_name, read_kinetics
from videovl.data.datasets import ClipDataset, MultiViewDataset
from videovl.data.media.transforms import build_transform
from videovl.data.sources import read_manifest, write_manifest
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.eval import runner
from videovl.models.factory import model_config
from videovl.models.matching import frame_similarity


def _save(path: Path, num_classes: int = 0) -> Path:
    torch.manual_seed(0)
    cfg = Config(model=model_config("test", num_classes=num_classes))
    cfg.data.num_frames = 4
    cfg.eval.batch_size = 6  # several batches, and blocks of 5 queries: the chunked paths run
    cfg.eval.chunk_size = 5
    tokenizer = load_tokenizer(cfg.model.text)
    fill_token_ids(cfg.model.text, tokenizer)
    model = videovl.create_model(cfg.model)
    with torch.no_grad():  # a random decoder scores every pair alike; spread its scores to rank them
        model.alignment.head.weight.mul_(50)
    return videovl.save_checkpoint(model, cfg, path, extra_files=tokenizer.save_pretrained)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("eval") / "model")


@pytest.fixture(scope="module")
def manifest(tiny_demo, tmp_path_factory) -> Path:
    """The 16 demo test clips, three of them with a second caption, plus a corrupt and an absent file."""
    root = tmp_path_factory.mktemp("manifest")
    (root / "corrupt.mp4").write_bytes(b"not a video at all" * 10)
    rows = []
    for i, s in enumerate(read_manifest(tiny_demo / "video_test.jsonl")):
        captions = s.captions + ([f"another view of clip {i}"] if i % 5 == 0 else [])
        rows.append({"video": s.path, "caption": captions, "label": s.label, "id": s.id})
    rows += [
        {"video": "corrupt.mp4", "caption": "unreadable", "label": rows[0]["label"]},
        {"video": "absent.mp4", "caption": "never there", "label": rows[0]["label"]},
    ]
    write_manifest(root / "test.jsonl", rows)
    return root / "test.jsonl"


def _run(ckpt: Path, *args: str) -> dict[str, float]:
    return tool.main(["--checkpoint", str(ckpt), "--num-workers", "0", *args])


def _readable(manifest: Path):
    return [s for s in read_manifest(manifest) if s.id.startswith("test/")]


@torch.no_grad()
def _embed_all(ckpt: Path, samples, **dataset_kwargs):
    """The model, its tokenizer, and every item of the dataset encoded in one batch."""
    model, cfg = videovl.load_checkpoint(ckpt)
    model.eval()
    transform = build_transform(cfg.data, train=False)
    cls = MultiViewDataset if "temporal_views" in dataset_kwargs else ClipDataset
    if cls is ClipDataset:
        dataset_kwargs["train"] = False
    dataset = cls(samples, num_frames=4, transform=transform, text="none", **dataset_kwargs)
    pixels = torch.stack([dataset[i]["pixels"] for i in range(len(dataset))])
    return model, load_tokenizer(cfg.model.text), model.encode_video(pixels)


def test_retrieval_keys_json_and_counts_against_a_full_matrix(ckpt, manifest, tmp_path, caplog):
    out = tmp_path / "metrics.json"
    metrics = _run(
        ckpt, "--task", "retrieval", "--manifest", str(manifest), "--dual-softmax", "--output", str(out)
    )
    assert json.loads(out.read_text()) == pytest.approx(metrics)
    for prefix in ("", "frame/", "dsl/", "rerank/"):  # test frames: 4 positions, so frame-level runs
        for key in ("t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MdR", "t2v/MnR", "v2t/R@1", "v2t/MnR"):
            assert f"{prefix}{key}" in metrics
    assert metrics["rerank/k"] == 128  # the checkpoint's model.alignment.rerank_k
    # the corrupt file and the absent one are reported, not scored
    assert metrics["data/unreadable"] == 1 and metrics["data/missing"] == 1
    assert "1 unreadable videos left out" in caplog.text and "corrupt.mp4" in caplog.text
    samples = _readable(manifest)
    assert metrics["data/videos"] == 16 and metrics["data/queries"] == sum(len(s.captions) for s in samples)

    model, tokenizer, videos = _embed_all(ckpt, samples)
    texts = [c for s in samples for c in s.captions]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"]).sentence
    gt = torch.tensor([i for i, s in enumerate(samples) for _ in s.captions]).numpy()
    sim = (text @ videos.clip.t()).double()
    cfg = model.cfg
    frame = frame_similarity(text, videos.frames, cfg.frame_agg, cfg.frame_agg_temperature).double()
    want = naive_metrics(sim.numpy(), gt)
    want |= {f"frame/{k}": v for k, v in naive_metrics(frame.numpy(), gt).items()}
    # dual softmax: a prior over all texts for t2v (per column), over all videos for v2t (per row)
    dsl_t2v, dsl_v2t = sim * (100 * sim).softmax(0), sim * (100 * sim).softmax(1)
    want |= {f"dsl/{k}": v for k, v in naive_metrics(dsl_t2v.numpy(), gt).items() if k.startswith("t2v")}
    want |= {f"dsl/{k}": v for k, v in naive_metrics(dsl_v2t.numpy(), gt).items() if k.startswith("v2t")}
    assert {k: metrics[k] for k in want} == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("dual_weight", [0.0, 1.0])
def test_rerank_of_everything_is_the_alignment_ranking_and_of_one_the_dual_encoder(
    ckpt, tiny_demo, dual_weight
):
    test = str(tiny_demo / "video_test.jsonl")
    args = ["--task", "retrieval", "--manifest", test, "--rerank-dual-weight", str(dual_weight)]
    plain = top1 = _run(ckpt, *args, "--rerank-k", "1")
    everything = _run(ckpt, *args, "--rerank-k", "16")
    assert everything["rerank/dual_weight"] == dual_weight
    keys = [k for k in plain if k.startswith(("t2v/", "v2t/"))]
    # K = 1: a true match stays first, any other keeps its dual-encoder rank
    assert {k: top1[f"rerank/{k}"] for k in keys} == pytest.approx({k: plain[k] for k in keys})

    samples = read_manifest(tiny_demo / "video_test.jsonl")
    model, tokenizer, videos = _embed_all(ckpt, samples)
    length = model.cfg.text.max_length  # the alignment decoder sees texts padded to it, as in training
    tokens = tokenizer(
        [s.captions[0] for s in samples], padding="max_length", max_length=length, return_tensors="pt"
    )
    with torch.no_grad():
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        pairs = [v.expand(len(samples), -1, -1) for v in videos.tokens[:, None]]  # one video, every text
        scores = torch.stack([model.match_score(text.hidden, text.mask, v) for v in pairs], 1)  # (Nt, Nv)
        # the fused score adds the dual encoder's logit, scale * cosine, to the decoder's log-odds
        scores = scores + dual_weight * model.scale() * text.sentence @ videos.clip.T
    want = naive_metrics(scores.double().numpy(), torch.arange(len(samples)).numpy())
    assert {k: everything[f"rerank/{k}"] for k in keys} == pytest.approx(want, abs=1e-6)
    assert any(everything[f"rerank/{k}"] != pytest.approx(plain[k]) for k in keys)  # a different ranking


def test_zero_shot_action_with_views_and_prompt_ensemble(ckpt, manifest, tmp_path):
    prompts = ["the digit moves {label}", "a video of {label}"]
    predictions = tmp_path / "predictions.json"
    args = [
        "--task",
        "action",
        "--manifest",
        str(manifest),
        "--views",
        "2x3",
        "--predictions",
        str(predictions),
    ]
    metrics = _run(ckpt, *args, *(a for p in prompts for a in ("--prompt", p)))
    assert {"action/top1", "action/top5", "action/mean_class_acc"} <= metrics.keys()
    assert metrics["data/views"] == 6 and metrics["data/videos"] == 16 and metrics["data/unreadable"] == 1

    samples = _readable(manifest)
    classes = sorted({s.label for s in read_manifest(manifest)})  # a manifest's classes: its sorted labels
    model, tokenizer, views = _embed_all(ckpt, samples, temporal_views=2, spatial_views=3)
    tokens = tokenizer(
        [p.format(label=c) for c in classes for p in prompts], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        prompt_emb = model.encode_text(tokens["input_ids"], tokens["attention_mask"]).sentence
        class_emb = torch.nn.functional.normalize(prompt_emb.view(len(classes), 2, -1).mean(1), dim=-1)
        logits = model.scale() * views.clip @ class_emb.t()
    probs = logits.softmax(-1).view(len(samples), 6, -1).mean(1)  # each video's 6 views averaged
    labels = torch.tensor([classes.index(s.label) for s in samples])
    rank = 1 + (probs > probs.gather(1, labels[:, None])).sum(1)
    assert metrics["action/top1"] == pytest.approx(100 * (rank == 1).double().mean().item())
    assert metrics["action/top5"] == pytest.approx(100 * (rank <= 5).double().mean().item())
    rows = json.loads(predictions.read_text())  # one per readable video, in manifest order
    assert [r["id"] for r in rows] == [s.id for s in samples]
    assert [r["label"] for r in rows] == [s.label for s in samples]
    assert [r["prediction"] for r in rows] == [classes[i] for i in probs.argmax(1).tolist()]
    for row, p in zip(rows, probs, strict=True):
        assert [c for c, _ in row["top5"]] == [classes[i] for i in p.topk(5).indices.tolist()]
        assert [q for _, q in row["top5"]] == pytest.approx(p.topk(5).values.tolist(), abs=1e-5)


def test_head_mode_uses_the_fine_tuned_head_and_its_class_list(ckpt, tiny_demo, tmp_path):
    test = str(tiny_demo / "video_test.jsonl")
    with pytest.raises(ValueError, match="no action head"):
        _run(ckpt, "--task", "action", "--manifest", test, "--mode", "head")
    head_ckpt = _save(tmp_path / "head", num_classes=8)
    # the head's class order (as fine-tuning wrote it) differs from the manifest's sorted labels
    order = (tiny_demo / "classes.txt").read_text().split("\n")[:8]
    (head_ckpt / "classes.txt").write_text("\n".join(order) + "\n")
    metrics = _run(head_ckpt, "--task", "action", "--manifest", test, "--mode", "head")

    samples = read_manifest(tiny_demo / "video_test.jsonl")
    model, _, videos = _embed_all(head_ckpt, samples, temporal_views=1, spatial_views=1)
    with torch.no_grad():
        predicted = model.action_head(videos.clip).argmax(-1)
    labels = torch.tensor([order.index(s.label) for s in samples])
    assert metrics["action/top1"] == pytest.approx(100 * (predicted == labels).double().mean().item())
    assert metrics["data/views"] == 1 and metrics["data/classes"] == 8
    (tmp_path / "three.txt").write_text("\n".join(order[:3]))
    with pytest.raises(ValueError, match="not in the class list"):
        _run(
            head_ckpt,
            "--task",
            "action",
            "--manifest",
            test,
            "--mode",
            "head",
            "--classes",
            str(tmp_path / "three.txt"),
        )


def test_captions_are_written_then_scored(ckpt, manifest, tmp_path, monkeypatch):
    seen = {}

    def fake_scores(predictions, references):  # the real scorer starts a JVM for ~15 s
        seen.update(predictions=predictions, references=references)
        return {"caption/BLEU-4": 1.0, "caption/METEOR": 2.0, "caption/ROUGE-L": 3.0, "caption/CIDEr": 4.0}

    monkeypatch.setattr(runner, "score_captions", fake_scores)
    out = tmp_path / "caption.json"
    metrics = _run(
        ckpt, "--task", "caption", "--manifest", str(manifest), "--num-beams", "2", "--output", str(out)
    )
    assert (
        metrics["caption/CIDEr"] == 4.0 and metrics["data/videos"] == 16 and metrics["data/unreadable"] == 1
    )
    rows = json.loads((tmp_path / "caption.captions.json").read_text())
    samples = {s.id: s for s in _readable(manifest)}
    assert [r["id"] for r in rows] == list(samples)
    assert all(isinstance(r["caption"], str) and r["references"] == samples[r["id"]].captions for r in rows)
    assert seen["predictions"] == {r["id"]: r["caption"] for r in rows}

    def no_java(predictions, references):
        raise RuntimeError("caption scoring needs a Java runtime on PATH")

    monkeypatch.setattr(runner, "score_captions", no_java)
    elsewhere = tmp_path / "greedy.json"
    with pytest.raises(RuntimeError, match=f"(?s)Java runtime.*written to {elsewhere}"):
        _run(ckpt, "--task", "caption", "--manifest", str(manifest), "--captions-out", str(elsewhere))
    assert len(json.loads(elsewhere.read_text())) == 16


@pytest.mark.parametrize("benchmark", ["msrvtt", "activitynet"])
def test_retrieval_benchmarks_report_missing_videos(ckpt, shared_dir, tmp_path, benchmark):
    ann = shared_dir / "annotations" / ("msrvtt" if benchmark == "msrvtt" else "activitynet")
    if benchmark == "msrvtt":
        names, total = ["video9770", "video7020", "video9771"], 1000
    else:
        names, total = list(json.loads((ann / "val_1.json").read_text()))[:3], 4917
    root = tmp_path / "videos"
    root.mkdir()
    write_test_video(root / f"{names[0]}.mp4")
    write_test_video(root / f"{names[1]}.mp4", num_frames=20)
    (root / f"{names[2]}.mp4").write_bytes(b"\x00" * 100)  # present but unreadable
    args = ["--benchmark", benchmark, "--annotations", str(ann), "--video-root", str(root), "--rerank-k", "0"]
    # one-frame clips (encoded as images: no frame-level scores), one per batch, 8-token captions
    small = ["--num-frames", "1", "--batch-size", "1", "--text-length", "8"]
    metrics = _run(ckpt, "--task", "retrieval", *args, *small)
    assert metrics["data/videos"] == 2 and metrics["data/queries"] == 2
    assert not any(k.startswith(("rerank/", "frame/")) for k in metrics)  # --rerank-k 0: off
    assert metrics["data/missing"] == total - 3 and metrics["data/unreadable"] == 1
    assert 50 <= metrics["t2v/R@1"] <= 100 and 1 <= metrics["t2v/MdR"] <= 2
    with pytest.raises(SystemExit):  # only action evaluation has predictions to write
        tool.parse_args(["--checkpoint", "x", "--task", "retrieval", "--manifest", "m", "--predictions", "p"])
    with pytest.raises(SystemExit):  # retrieval benchmarks have no action labels
        tool.parse_args(["--checkpoint", "x", "--task", "action", *args])


def test_kinetics_benchmark_with_default_views_and_the_400_classes(ckpt, shared_dir, tmp_path):
    ann = shared_dir / "annotations" / "kinetics400"
    with (ann / "val.csv").open() as f:
        rows = list(csv.DictReader(f))
    first, other = rows[0], next(r for r in rows if r["label"] != rows[0]["label"])
    root = tmp_path / "k400"
    (root / first["label"]).mkdir(parents=True)  # clips may sit in class folders
    for row, folder in ((first, root / first["label"]), (other, root)):
        name = clip_name(row["youtube_id"], int(row["time_start"]), int(row["time_end"]))
        write_test_video(folder / name, size=(40, 56))
    metrics = _run(
        ckpt, "--task", "action", "--benchmark", "k400", "--annotations", str(ann), "--video-root", str(root)
    )
    assert metrics["data/views"] == 12 and metrics["data/classes"] == 400 and metrics["data/videos"] == 2
    assert metrics["data/missing"] == len(read_kinetics(ann / "val.csv")[0]) - 2
    assert {"action/top1", "action/top5", "action/mean_class_acc"} <= metrics.keys()


@pytest.mark.slow
def test_two_cpu_processes_shard_videos_and_agree_with_one(ckpt, manifest, tmp_path):
    # 17 files (one unreadable) on 2 processes: unequal shards, a placeholder, tokens gathered to re-rank
    args = ["--checkpoint", str(ckpt), "--task", "retrieval", "--manifest", str(manifest)]
    args += ["--num-workers", "0"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", "29641", str(Path(tool.__file__)), "--cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(tool.__file__).parents[1])}
    out = tmp_path / "two.json"
    proc = subprocess.run(
        [*launch, *args, "--output", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout
    assert json.loads(out.read_text()) == pytest.approx(tool.main(args), abs=1e-9)
