"""Embedding a dataset with a model, sharded over processes and gathered back in dataset order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import Tensor

from videovl.distributed import gather_no_grad

__all__ = ["embed_videos", "embed_texts", "gather_in_order", "shard_indices"]


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
def embed_videos(
    model, batches: Iterable[dict], device: torch.device, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Run ``model.encode_video`` over batches from a ``Collator``; returns this process's rows:
    ``clip`` (N, D), ``frames`` (N, T', D), ``index`` (N,), ``valid`` (N,), and the ``bad`` files."""
    clips, frames, index, valid, bad = [], [], [], [], []
    for batch in batches:
        with _autocast(device, dtype):
            out = model.encode_video(batch["pixels"].to(device, non_blocking=True))
        clips.append(out.clip.float())
        frames.append(out.frames.float())
        index.append(batch["index"].to(device))
        valid.append(batch["valid"].to(device))
        bad.extend(batch["bad"])
    if not clips:
        raise ValueError("no batches to embed: is this process's shard empty?")
    return {
        "clip": torch.cat(clips),
        "frames": torch.cat(frames),
        "index": torch.cat(index),
        "valid": torch.cat(valid),
        "bad": bad,
    }


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
