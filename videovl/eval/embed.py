"""Embedding a dataset with a model, sharded over processes and gathered back in dataset order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from videovl.distributed import gather_no_grad

__all__ = [
    "embed_videos",
    "embed_texts",
    "gather_in_order",
    "iter_video_embeddings",
    "shard_indices",
    "tokenized_batches",
]


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    return list(range(rank, n, world_size))


def gather_in_order(local: Tensor, local_index: Tensor, total: int) -> Tensor:
    """Collect rows computed on every process (``local_index`` says which dataset rows they are) into one
    (total, ...) tensor on every process, in dataset order."""
    rows, idx = gather_no_grad(local), gather_no_grad(local_index)
    out = local.new_zeros((total, *local.shape[1:]))
    out[idx] = rows
    return out


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def iter_video_embeddings(
    model, batches: Iterable[dict], device: torch.device, dtype: torch.dtype | None = None
) -> Iterator[dict]:
    """One dict per batch from a ``Collator``: ``clip`` (B, D), ``frames`` (B, T', D) in float32 on
    ``device``, ``index`` (B,), ``valid`` (B,) and the batch's ``bad`` files."""
    for batch in batches:
        with _autocast(device, dtype):
            out = model.encode_video(batch["pixels"].to(device, non_blocking=True))
        yield {
            "clip": out.clip.float(),
            "frames": out.frames.float(),
            "index": batch["index"].to(device),
            "valid": batch["valid"].to(device),
            "bad": list(batch["bad"]),
        }


def embed_videos(
    model, batches: Iterable[dict], device: torch.device, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Run ``model.encode_video`` over batches from a ``Collator``; returns this process's rows:
    ``clip`` (N, D), ``frames`` (N, T', D), ``index`` (N,), ``valid`` (N,), and the ``bad`` files."""
    parts = list(iter_video_embeddings(model, batches, device, dtype))
    if not parts:
        raise ValueError("no batches to embed: is this process's shard empty?")
    out = {k: torch.cat([p[k] for p in parts]) for k in ("clip", "frames", "index", "valid")}
    return out | {"bad": [path for p in parts for path in p["bad"]]}


def tokenized_batches(tokenizer, texts: Sequence[str], batch_size: int, max_length: int) -> Iterator[dict]:
    """``texts`` in order as padded, truncated token batches for :func:`embed_texts`."""
    for i in range(0, len(texts), batch_size):
        yield tokenizer(
            list(texts[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )


@torch.no_grad()
def embed_texts(
    model, batches: Iterable[dict], device: torch.device, dtype: torch.dtype | None = None
) -> Tensor:
    """Sentence embeddings (N, D) for tokenized batches (``input_ids``, ``attention_mask``)."""
    out = []
    for batch in batches:
        with _autocast(device, dtype):
            emb = model.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        out.append(emb.sentence.float())
    return torch.cat(out)
