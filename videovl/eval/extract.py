"""Embedding extraction: inputs listed, work cut into shards written atomically, outputs merged, search.

An extraction folder (written by ``tools/extract_embeddings.py``, read by ``tools/search.py``)::

    embeddings.safetensors  clip (N, D), frames (N, T', D); with captions also text (M, D) and
                            text_to_clip (M,), the clip row each caption belongs to
                            (``--format npy``: clip.npy, frames.npy, text.npy, text_to_clip.npy)
    ids.txt, paths.txt      one line per clip row, in row order
    captions.txt            one line per text row (when the inputs have captions)
    config.yaml             the checkpoint's config, ``data.num_frames`` as used
    extract.json            checkpoint, arguments, counts, format
    unreadable.txt          inputs that did not decode, one path per line
    shards/                 shard_00000.safetensors, ... and spec.json (what the shards were made from)
    index.faiss             inner product over the clip rows (optional, needs faiss-cpu; see
                            videovl/train/mining.py); without it search is exact, in numpy

Embeddings are L2-normalised float32. Rows of unreadable inputs are left out (with their captions), not
masked: ``ids.txt`` says which inputs the N rows are, in input order. Shards stay after the merge, so a
rerun (for instance to add ``--index``) only merges again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import save_file
from torch import Tensor

from videovl.config import ConfigError, DataConfig
from videovl.data.collate import Collator
from videovl.data.datasets import ClipDataset
from videovl.data.loader import build_loader
from videovl.data.media.transforms import build_transform
from videovl.data.media.video_io import is_image
from videovl.data.sources import Sample, read_manifest
from videovl.eval.embed import embed_texts, iter_video_embeddings, tokenized_batches
from videovl.extras import OPTIONAL, optional
from videovl.models.checkpoint import WEIGHTS_NAME

if TYPE_CHECKING:
    import faiss

__all__ = [
    "VIDEO_SUFFIXES",
    "EMBEDDINGS_NAME",
    "INDEX_NAME",
    "list_inputs",
    "eval_dataset",
    "shard_ranges",
    "shard_path",
    "extraction_spec",
    "check_spec",
    "write_spec",
    "embed_shards",
    "write_shard",
    "read_shard",
    "merge_shards",
    "write_outputs",
    "load_embeddings",
    "read_lines",
    "first_captions",
    "ExactIndex",
    "exact_index",
    "load_index",
    "search",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
EMBEDDINGS_NAME = "embeddings.safetensors"
INDEX_NAME = "index.faiss"
_SHARD_KEYS = ("clip", "frames", "index", "valid", "text", "text_to_clip")

# ----------------------------------------------------------------------------------------------- inputs


def list_inputs(
    manifest: str | Path | None = None, source: str | Path | None = None, root: str | Path | None = None
) -> list[Sample]:
    """Samples from a manifest, or from ``source``: a folder (its video files, recursively, in sorted
    order, ids relative to it) or one file (id: its name). One modality only: images and videos give
    frame embeddings of different lengths."""
    if (manifest is None) == (source is None):
        raise ValueError("give exactly one of a manifest or an input folder/file")
    if manifest is not None:
        samples = read_manifest(manifest, root)
    else:
        src = Path(source)
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not files:
                raise FileNotFoundError(
                    f"{src} holds no video files ({' '.join(VIDEO_SUFFIXES)}); for images or other "
                    "names, list them in a manifest"
                )
            samples = [Sample(str(p), "video", id=p.relative_to(src).as_posix()) for p in files]
        elif src.is_file():
            if not (is_image(src) or src.suffix.lower() in VIDEO_SUFFIXES):
                # A manifest here was once decoded as a video: nothing embedded, and the run "succeeded".
                manifest_like = src.suffix.lower() in (".jsonl", ".json")
                hint = "; a manifest goes to --manifest" if manifest_like else ""
                raise ConfigError(
                    f"input {src} is not a video ({' '.join(VIDEO_SUFFIXES)}) or image file{hint}"
                )
            samples = [Sample(str(src), "image" if is_image(src) else "video", id=src.name)]
        else:
            raise FileNotFoundError(f"input {src} does not exist")
    images = sum(not s.is_video for s in samples)
    if 0 < images < len(samples):
        raise ConfigError(
            f"{manifest or source} mixes {len(samples) - images} videos and {images} images; their frame "
            "embeddings differ in length (T' vs 1): extract each modality into its own folder"
        )
    return samples


def eval_dataset(samples: list[Sample], data: DataConfig, num_frames: int) -> ClipDataset:
    """Evaluation clips (centre frames, centre crop); unreadable files become ``valid=False`` rows."""
    transform = build_transform(data, train=False)
    return ClipDataset(
        samples, num_frames=num_frames, transform=transform, train=False, backend=data.backend, text="none"
    )


# ----------------------------------------------------------------------------------------------- shards


def shard_ranges(n: int, shard_size: int) -> list[range]:
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    return [range(i, min(i + shard_size, n)) for i in range(0, n, shard_size)]


def shard_path(out: str | Path, k: int) -> Path:
    return Path(out) / "shards" / f"shard_{k:05d}.safetensors"


def extraction_spec(checkpoint: str | Path, samples: list[Sample], num_frames: int, shard_size: int) -> dict:
    """What the shards depend on: the weights file, the inputs (ids and paths), frames and shard size."""
    stat = (Path(checkpoint) / WEIGHTS_NAME).stat()
    inputs = hashlib.sha256("\n".join(f"{s.id}\t{s.path}" for s in samples).encode()).hexdigest()
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "weights": [stat.st_size, stat.st_mtime_ns],
        "inputs": [len(samples), inputs[:16]],
        "num_frames": num_frames,
        "shard_size": shard_size,
    }


def check_spec(out: str | Path, spec: dict) -> None:
    """Shards of an earlier run are reused only when that run extracted the same thing."""
    path = Path(out) / "shards" / "spec.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    diff = {
        k: (old.get(k), spec.get(k)) for k in sorted(old.keys() | spec.keys()) if old.get(k) != spec.get(k)
    }
    if diff:
        raise ValueError(
            f"{path}: the shards in {path.parent} come from another extraction (then, now: {diff}); "
            f"use another --out or delete {path.parent}"
        )


def write_spec(out: str | Path, spec: dict) -> None:
    path = Path(out) / "shards" / "spec.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(spec, indent=1)))


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary name and rename: readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def embed_shards(
    model,
    dataset: ClipDataset,
    shards: dict[int, range],
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
    tokenizer=None,
    max_length: int = 32,
    on_batch: Callable[[int], Any] | None = None,
) -> Iterator[tuple[int, dict[str, Tensor], list[str]]]:
    """Yield ``(k, tensors, bad)`` for each shard as it completes, in the order given.

    One loader serves every shard, so its workers keep decoding the next clips while the model encodes
    (and while each finished shard's captions are embedded, when a ``tokenizer`` is given).
    """
    batches = [list(r[i : i + batch_size]) for r in shards.values() for i in range(0, len(r), batch_size)]
    loader = build_loader(dataset, batch_sampler=batches, collate_fn=Collator(None), num_workers=num_workers)
    parts = _counted(iter_video_embeddings(model, loader, device, dtype), on_batch)
    for k, rows in shards.items():
        got = list(itertools.islice(parts, math.ceil(len(rows) / batch_size)))
        out = {key: torch.cat([p[key] for p in got]).cpu() for key in ("clip", "frames", "index", "valid")}
        assert out["index"].tolist() == list(rows), f"shard {k}: rows arrived out of order"
        with_text = tokenizer is not None
        captions = [(i, c) for i in rows for c in dataset.samples[i].captions] if with_text else []
        if captions:
            texts = tokenized_batches(tokenizer, [c for _, c in captions], batch_size, max_length)
            out["text"] = embed_texts(model, texts, device, dtype).cpu()
        else:
            out["text"] = out["clip"].new_zeros(0, out["clip"].shape[1])
        out["text_to_clip"] = torch.tensor([i for i, _ in captions], dtype=torch.long)
        yield k, out, [path for p in got for path in p["bad"]]


def _counted(parts: Iterator[dict], on_batch: Callable[[int], Any] | None) -> Iterator[dict]:
    for part in parts:
        if on_batch is not None:
            on_batch(len(part["index"]))
        yield part


def write_shard(path: Path, tensors: dict[str, Tensor], bad: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"bad": json.dumps(bad)}))


def read_shard(path: Path) -> tuple[dict[str, Tensor], list[str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["bad"])  # noqa: SIM118


def merge_shards(paths: list[Path]) -> tuple[dict[str, Tensor], list[str]]:
    """Concatenate shards (in order) and drop unreadable rows. Returns ``clip``, ``frames``, ``index``
    (input row of each clip row), ``text``, ``text_to_clip`` (into the kept rows), ``text_kept`` (mask
    over all captions in input order) and the unreadable paths."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shards are missing (first: {missing[0]}); rerun to finish")
    parts = [read_shard(p) for p in paths]
    cat = {k: torch.cat([t[k] for t, _ in parts]) for k in _SHARD_KEYS}
    assert cat["index"].tolist() == list(range(len(cat["index"]))), "shards do not tile the inputs"
    keep = cat["valid"].nonzero().squeeze(1)
    row_of = torch.full((len(cat["index"]),), -1, dtype=torch.long)
    row_of[keep] = torch.arange(len(keep))
    text_to_clip = row_of[cat["text_to_clip"]]
    text_kept = text_to_clip >= 0
    merged = {
        "clip": cat["clip"][keep],
        "frames": cat["frames"][keep],
        "index": keep,
        "text": cat["text"][text_kept],
        "text_to_clip": text_to_clip[text_kept],
        "text_kept": text_kept,
    }
    return merged, sorted({path for _, bad in parts for path in bad})


# ---------------------------------------------------------------------------------------------- outputs


def write_outputs(
    out: str | Path, merged: dict[str, Tensor], samples: list[Sample], fmt: str = "safetensors"
) -> dict[str, str]:
    """Write the merged embeddings (``fmt``: safetensors or npy) and the line files; returns their paths."""
    out = Path(out)
    keys = ["clip", "frames"] + (["text", "text_to_clip"] if len(merged["text_kept"]) else [])
    tensors = {k: merged[k].contiguous() for k in keys}
    files: dict[str, str] = {}
    if fmt == "safetensors":
        _atomic(out / EMBEDDINGS_NAME, lambda tmp: save_file(tensors, str(tmp)))
        files["embeddings"] = str(out / EMBEDDINGS_NAME)
    elif fmt == "npy":
        for k, t in tensors.items():
            _atomic(out / f"{k}.npy", lambda tmp, t=t: _save_npy(tmp, t.numpy()))
            files[k] = str(out / f"{k}.npy")
    else:
        raise ValueError(f"format '{fmt}' is not one of 'safetensors', 'npy'")
    kept = [samples[i] for i in merged["index"].tolist()]
    lines = {"ids": [s.id for s in kept], "paths": [s.path for s in kept]}
    if "text" in tensors:
        captions = [c for s in samples for c in s.captions]
        lines["captions"] = [c for c, k in zip(captions, merged["text_kept"].tolist()) if k]
    for name, rows in lines.items():
        # A line per row: a newline inside an id or caption would shift every later row.
        text = "".join(" ".join(r.splitlines()) + "\n" for r in rows)
        _atomic(out / f"{name}.txt", lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        files[name] = str(out / f"{name}.txt")
    return files


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save would append ".npy" to the temporary name
        np.save(f, array)


def load_embeddings(folder: str | Path) -> dict[str, np.ndarray]:
    """The arrays an extraction folder holds, whichever format it was written in."""
    folder = Path(folder)
    if (folder / EMBEDDINGS_NAME).is_file():
        return load_numpy(str(folder / EMBEDDINGS_NAME))
    arrays = {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}
    if "clip" not in arrays:
        raise FileNotFoundError(
            f"{folder} holds neither {EMBEDDINGS_NAME} nor clip.npy: is it the --out of extract_embeddings?"
        )
    return arrays


def read_lines(path: str | Path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def first_captions(folder: str | Path) -> dict[int, str]:
    """Clip row -> its first caption, for the rows that have one (none when the inputs had no captions)."""
    folder = Path(folder)
    if not (folder / "captions.txt").is_file():
        return {}
    rows = load_embeddings(folder)["text_to_clip"].tolist()
    captions: dict[int, str] = {}
    for row, caption in zip(rows, read_lines(folder / "captions.txt"), strict=True):
        captions.setdefault(int(row), caption)
    return captions


# ----------------------------------------------------------------------------------------------- search

# Scores held at once by the exact index (float32): queries go through in blocks of this many scores.
_BLOCK_SCORES = 1 << 26  # 256 MB


def _normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero, as faiss.normalize_L2 leaves them), float32."""
    x = np.array(x, dtype=np.float32, order="C", ndmin=2)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


class ExactIndex:
    """Exact inner-product search over L2-normalised rows, in numpy: the rows and scores of faiss's
    ``IndexFlatIP`` without faiss (a matrix product either way). Has the two members :func:`search` uses,
    ``ntotal`` and ``search(queries, k)``, so a faiss index read from ``index.faiss`` serves in its place."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = _normalised(vectors)

    @property
    def ntotal(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32, rows int64), each (Q, k), best first; past ``ntotal`` rows are -1 and scores
        float32's lowest, as faiss pads them."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.vectors.shape[1])
        n, found = self.ntotal, min(k, self.ntotal)
        scores = np.full((len(queries), k), np.finfo(np.float32).min, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        step = max(1, _BLOCK_SCORES // max(n, 1))
        for start in range(0, len(queries) if n else 0, step):
            block = queries[start : start + step] @ self.vectors.T  # (q, N)
            if found < n:
                top = np.argpartition(-block, found - 1, axis=1)[:, :found]
            else:
                top = np.broadcast_to(np.arange(n), block.shape)
            top_scores = np.take_along_axis(block, top, 1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            scores[start : start + step, :found] = np.take_along_axis(top_scores, order, 1)
            rows[start : start + step, :found] = np.take_along_axis(top, order, 1)
        return scores, rows


def exact_index(clip: np.ndarray) -> ExactIndex:
    """Exact cosine search over ``clip`` (N, D), in numpy. For large N, ``extract_embeddings.py --index``
    writes a faiss index (inverted lists, ``videovl.train.mining.build_index``; needs faiss-cpu)."""
    return ExactIndex(clip)


def load_index(folder: str | Path) -> ExactIndex | faiss.Index:
    """``folder/index.faiss`` when faiss is installed, else an exact index built on the spot from the
    folder's clip embeddings (without faiss an ``index.faiss`` is passed over, with a warning: exact search
    finds the same rows or better, more slowly)."""
    path = Path(folder) / INDEX_NAME
    if path.is_file():
        faiss = optional("faiss")
        if faiss is not None:
            return faiss.read_index(str(path))
        package, extra = OPTIONAL["faiss"]
        warnings.warn(
            f'{path} needs {package}, which is not installed (pip install "videovl[{extra}]"); '
            "searching the clip embeddings exactly instead",
            stacklevel=2,
        )
    return exact_index(load_embeddings(folder)["clip"])


def search(index: ExactIndex | faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, rows), each (Q, k') with k' = min(k, index size), best first."""
    scores, rows = index.search(_normalised(queries), min(k, index.ntotal))
    return scores, rows
