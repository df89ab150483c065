"""tools/extract_embeddings.py end to end on a tiny checkpoint: outputs against direct encoding, resume,
unreadable files, folder and single-file input, two processes against one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tools import extract_embeddings as tool
from videovl.config import Config, ConfigError, load_config
from videovl.data.sources import read_manifest
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.eval.embed import embed_texts, tokenized_batches
from videovl.eval.extract import eval_dataset, list_inputs, load_embeddings, read_lines, shard_ranges
from videovl.models.checkpoint import load_checkpoint, save_checkpoint
from videovl.models.factory import create_model, model_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised test-size model saved as pretraining saves it (with its tokenizer)."""
    cfg = Config(model=model_config("test"))
    tokenizer = load_tokenizer(cfg.model.text)
    fill_token_ids(cfg.model.text, tokenizer)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model"
    return save_checkpoint(create_model(cfg.model), cfg, path, extra_files=tokenizer.save_pretrained)


def extract(checkpoint: Path, out: Path, *args: str) -> dict:
    return tool.main(["--checkpoint", str(checkpoint), "--out", str(out), "--quiet", *args])


def direct(checkpoint: Path, paths: list[str], num_frames: int) -> dict[str, torch.Tensor]:
    """The reference: one ``encode_video`` call on the evaluation clips of ``paths``."""
    model, cfg = load_checkpoint(checkpoint)
    model.eval()
    dataset = eval_dataset([s for p in paths for s in list_inputs(source=p)], cfg.data, num_frames)
    with torch.no_grad():
        out = model.encode_video(torch.stack([dataset[i]["pixels"] for i in range(len(paths))]))
    return {"clip": out.clip, "frames": out.frames}


def close(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-4, atol=1e-5)


def test_manifest_outputs_match_direct_encoding(tiny_checkpoint, tiny_demo, tmp_path):
    manifest = tiny_demo / "video_test.jsonl"
    samples = read_manifest(manifest)
    out = tmp_path / "out"
    args = ["--manifest", str(manifest), "--batch-size", "4", "--shard-size", "6", "--num-frames", "4"]
    result = extract(tiny_checkpoint, out, *args, "--workers", "1")
    assert result["inputs"] == result["clips"] == len(samples) == 16
    assert result["unreadable"] == 0 and result["shards"] == 3 and result["computed_shards"] == 3

    emb = load_embeddings(out)
    assert emb["clip"].shape == (16, 32) and emb["frames"].shape == (16, 4, 32)
    assert read_lines(out / "ids.txt") == [s.id for s in samples]
    assert read_lines(out / "paths.txt") == [s.path for s in samples]
    ref = direct(tiny_checkpoint, [s.path for s in samples], num_frames=4)
    close(emb["clip"], ref["clip"])
    close(emb["frames"], ref["frames"])

    captions = [c for s in samples for c in s.captions]
    assert read_lines(out / "captions.txt") == captions
    assert emb["text_to_clip"].tolist() == [i for i, s in enumerate(samples) for _ in s.captions]
    model, cfg = load_checkpoint(tiny_checkpoint)
    tokens = tokenized_batches(load_tokenizer(cfg.model.text), captions, 64, cfg.model.text.max_length)
    close(emb["text"], embed_texts(model.eval(), tokens, torch.device("cpu")))

    assert load_config(out / "config.yaml").data.num_frames == 4
    info = json.loads((out / "extract.json").read_text())
    assert info["args"]["shard_size"] == 6 and info["checkpoint"] == str(tiny_checkpoint.resolve())
    assert (out / "unreadable.txt").read_text() == ""


def test_rerun_skips_finished_shards(tiny_checkpoint, tiny_demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["--manifest", str(tiny_demo / "video_test.jsonl"), "--shard-size", "5", "--workers", "0"]
    extract(tiny_checkpoint, out, *args, "--num-frames", "2")
    first = load_embeddings(out)
    shards = sorted((out / "shards").glob("shard_*.safetensors"))
    assert len(shards) == len(shard_ranges(16, 5)) == 4
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()  # as if the run had stopped before this shard was written

    written, real = [], tool.write_shard

    def counting(path, *rest):
        written.append(path.name)
        real(path, *rest)

    monkeypatch.setattr(tool, "write_shard", counting)
    result = extract(tiny_checkpoint, out, *args, "--num-frames", "2")
    assert written == [shards[1].name]
    assert (result["computed_shards"], result["skipped_shards"]) == (1, 3)
    assert {p.name: p.stat().st_mtime_ns for p in shards if p != shards[1]} == {
        k: v for k, v in mtimes.items() if k != shards[1].name
    }
    for k, v in load_embeddings(out).items():
        close(v, first[k])

    with pytest.raises(ValueError, match="another extraction.*num_frames"):
        extract(tiny_checkpoint, out, *args, "--num-frames", "3")


def test_unreadable_file_is_listed_and_the_rest_finishes(tiny_checkpoint, tiny_demo, tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    videos = sorted((tiny_demo / "videos" / "test").glob("*.mp4"))[:4]
    for v in videos[:2]:
        shutil.copy(v, folder / v.name)
    for v in videos[2:]:
        shutil.copy(v, folder / "sub" / v.name)
    broken = folder / "broken.mp4"
    broken.write_bytes(os.urandom(2000))
    (folder / "notes.txt").write_text("not a video")

    out = tmp_path / "out"
    args = ["--input", str(folder), "--format", "npy", "--shard-size", "2", "--batch-size", "2"]
    result = extract(tiny_checkpoint, out, *args, "--workers", "1", "--num-frames", "4")
    assert (result["inputs"], result["clips"], result["unreadable"], result["texts"]) == (5, 4, 1, 0)
    assert read_lines(out / "unreadable.txt") == [str(broken)]
    ids = read_lines(out / "ids.txt")
    assert ids == [videos[0].name, videos[1].name, f"sub/{videos[2].name}", f"sub/{videos[3].name}"]
    assert sorted(p.name for p in out.glob("*.npy")) == ["clip.npy", "frames.npy"]  # no captions
    emb = load_embeddings(out)
    assert emb["clip"].shape == (4, 32) and emb["frames"].shape == (4, 4, 32)
    close(emb["clip"], direct(tiny_checkpoint, [str(folder / i) for i in ids], num_frames=4)["clip"])


def test_single_file_input(tiny_checkpoint, tiny_demo, tmp_path):
    video = sorted((tiny_demo / "videos" / "test").glob("*.mp4"))[3]
    out = tmp_path / "out"
    result = extract(tiny_checkpoint, out, "--input", str(video), "--workers", "0", "--num-frames", "4")
    assert result["clips"] == 1 and read_lines(out / "ids.txt") == [video.name]
    close(load_embeddings(out)["clip"], direct(tiny_checkpoint, [str(video)], num_frames=4)["clip"])


def test_input_errors_name_the_problem(tiny_demo, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no video files"):
        list_inputs(source=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(source=tmp_path / "nothing.mp4")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        json.dumps({"video": str(tiny_demo / "videos" / "test" / "000000.mp4")})
        + "\n"
        + json.dumps({"image": "a.png"})
        + "\n"
    )
    with pytest.raises(ConfigError, match="mixes 1 videos and 1 images"):
        list_inputs(mixed)
    # a manifest given as --input was once decoded as one video: nothing embedded, exit status 0
    with pytest.raises(ConfigError, match="mixed.jsonl is not a video .* a manifest goes to --manifest"):
        list_inputs(source=mixed)
    with pytest.raises(ConfigError, match="a manifest goes to --manifest"):  # before any model loads
        tool.main(["--checkpoint", str(tmp_path), "--input", str(mixed), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        tool.parse_args(["--checkpoint", "c", "--out", "o", "--input", "x", "--shard-size", "0"])


@pytest.mark.slow
def test_two_processes_give_the_one_process_output(tiny_checkpoint, tiny_demo, tmp_path):
    manifest = str(tiny_demo / "video_test.jsonl")
    common = ["--manifest", manifest, "--shard-size", "3", "--batch-size", "2", "--num-frames", "2"]
    extract(tiny_checkpoint, tmp_path / "one", *common, "--workers", "0", "--index")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "29617", str(ROOT / "tools" / "extract_embeddings.py"),
        "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "two"), "--quiet", "--workers", "0",
        "--index", *common,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = load_embeddings(tmp_path / "one"), load_embeddings(tmp_path / "two")
    assert one.keys() == two.keys() == {"clip", "frames", "text", "text_to_clip"}
    for k in one:
        close(two[k], one[k])
    for name in ("ids.txt", "paths.txt", "captions.txt"):
        assert read_lines(tmp_path / "two" / name) == read_lines(tmp_path / "one" / name)
    assert len(list((tmp_path / "two" / "shards").glob("shard_*"))) == 6
    assert (tmp_path / "two" / "index.faiss").is_file()
    assert np.isfinite(two["clip"]).all()


def test_merge_drops_unreadable_rows_and_their_captions(tmp_path):
    from videovl.data.sources import Sample
    from videovl.eval.extract import merge_shards, write_outputs, write_shard

    # 0, 1 or 2 captions a clip; rows 1 and 4 unreadable
    samples = [Sample(f"/v/{i}.mp4", "video", [f"c{i}a", f"c{i}b"][: i % 3], id=f"v{i}") for i in range(5)]
    valid = torch.tensor([True, False, True, True, False])
    clip = torch.randn(5, 4)
    captions = [(i, c) for i, s in enumerate(samples) for c in s.captions]
    text = torch.randn(len(captions), 4)
    for k, rows in enumerate(shard_ranges(5, 3)):
        t, r = [j for j, (i, _) in enumerate(captions) if i in rows], list(rows)
        tensors = {"clip": clip[r], "frames": clip[r, None], "index": torch.tensor(r), "valid": valid[r],
                   "text": text[t], "text_to_clip": torch.tensor([captions[j][0] for j in t])}  # fmt: skip
        write_shard(tmp_path / f"s{k}.safetensors", tensors, [samples[i].path for i in rows if not valid[i]])
    merged, bad = merge_shards([tmp_path / "s0.safetensors", tmp_path / "s1.safetensors"])
    assert bad == ["/v/1.mp4", "/v/4.mp4"]
    kept = [0, 2, 3]  # the naive way: keep readable rows, then the captions of kept rows, renumbered
    close(merged["clip"], clip[kept])
    expect = [(kept.index(i), j) for j, (i, _) in enumerate(captions) if i in kept]
    assert merged["text_to_clip"].tolist() == [r for r, _ in expect]
    close(merged["text"], text[[j for _, j in expect]])
    write_outputs(tmp_path, merged, samples, "npy")
    assert read_lines(tmp_path / "ids.txt") == ["v0", "v2", "v3"]
    assert read_lines(tmp_path / "captions.txt") == [captions[j][1] for _, j in expect]
