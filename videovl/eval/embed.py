"""Running the model over an evaluation dataset, sharded over processes and gathered back in dataset order.

:func:`map_videos` is the one loop that does it; every evaluation (retrieval, action, captioning, the
caption loss), training validation and hard-negative mining go through it, :func:`embed_videos` being the
common case. Each process takes every ``world_size``-th item and all of them receive every row. Rank and
world size are passed in (the caller knows its process group); the gathers are
:mod:`videovl.distributed`'s, so any launcher that initialises ``torch.distributed`` works, and so does
none. :func:`iter_video_embeddings` is the streaming form for extraction, whose shards go to files
instead of being gathered.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from videovl.data.collate import Collator
from videovl.data.loader import build_loader
from videovl.distributed import gather_no_grad
from videovl.progress import progress

__all__ = [
    "BatchFn",
    "map_videos",
    "embed_videos",
    "embed_texts",
    "gather_in_order",
    "iter_video_embeddings",
    "shard_indices",
    "tokenized_batches",
]

# A collated batch (its tensors on the device) -> per-item rows {name: (B, ...)}
BatchFn = Callable[[dict[str, Any]], dict[str, Tensor]]


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


def _apply(
    fn: BatchFn, batches: Iterable[dict], device: torch.device, dtype: torch.dtype | None
) -> Iterator[tuple[dict, dict[str, Tensor]]]:
    """``(batch, rows)`` per batch: ``fn`` on the batch moved to ``device``, under autocast to ``dtype``;
    floating rows come back in float32 (on the device)."""
    for batch in batches:
        moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.no_grad(), _autocast(device, dtype):
            rows = fn(moved)
        yield batch, {k: v.float() if v.is_floating_point() else v for k, v in rows.items()}


def _encoder(model, frames: bool = True, tokens: bool = False) -> BatchFn:
    def encode(batch: dict[str, Any]) -> dict[str, Tensor]:
        out = model.encode_video(batch["pixels"])
        rows = {"clip": out.clip} | ({"frames": out.frames} if frames else {})
        return rows | ({"tokens": out.tokens} if tokens else {})

    return encode


def map_videos(
    dataset: Dataset,
    fn: BatchFn,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    desc: str | None = None,
) -> dict[str, Tensor]:
    """``fn(batch)`` over this process's share of ``dataset``; every item's rows in dataset order on every
    process, on the CPU (floating rows in float32), plus ``valid`` (False for unreadable files, whose rows
    are those of the dataset's placeholder: callers leave them out or ignore them).

    ``batch`` is collated by ``collate_fn`` (default: pixels only) with its tensors on ``device``; ``fn``
    runs without gradients, under autocast to ``dtype`` when one is given. ``desc``: a progress bar on rank
    0. A collective when ``world_size`` > 1: call it on every process."""
    device = torch.device(device)
    positions = shard_indices(len(dataset), rank, world_size)
    if not positions:
        raise ValueError(f"{len(dataset)} items cannot be shared by {world_size} processes: use fewer")
    loader = build_loader(
        Subset(dataset, positions),
        batch_size=batch_size,
        collate_fn=collate_fn or Collator(None),
        num_workers=num_workers,
    )
    if desc is not None:
        loader = progress(loader, desc=desc, disable=rank != 0, dynamic_ncols=True)
    parts = defaultdict(list)
    for batch, rows in _apply(fn, loader, device, dtype):
        for key, value in rows.items():
            parts[key].append(value.cpu())
        parts["valid"].append(batch["valid"].long())  # long: not every backend gathers bool
    # A process group may need device tensors (NCCL); one process gathers nothing and stays on the CPU.
    where = device if world_size > 1 else torch.device("cpu")
    # Rows come back in shard order; the shard itself says which dataset rows they are (the batch's own
    # ``index`` would not: a ConcatDataset numbers each part from 0).
    index = torch.tensor(positions, device=where)
    out = {k: gather_in_order(torch.cat(v).to(where), index, len(dataset)).cpu() for k, v in parts.items()}
    out["valid"] = out["valid"].bool()
    return out


def embed_videos(
    model, dataset: Dataset, *, frames: bool = True, tokens: bool = False, **kwargs: Any
) -> dict[str, Tensor]:
    """``clip`` (N, D), ``frames`` (N, T', D) unless ``frames`` is False, with ``tokens`` also the visual
    tokens (N, L, W), and ``valid`` (N,) of every item of ``dataset``, in dataset order on every process
    (see :func:`map_videos`, whose keyword arguments ``kwargs`` are). ``model`` needs ``encode_video``;
    the caller sets its mode. Every process holds every row: leave out what is not needed."""
    return map_videos(dataset, _encoder(model, frames, tokens), **kwargs)


def iter_video_embeddings(
    model, batches: Iterable[dict], device: torch.device, dtype: torch.dtype | None = None
) -> Iterator[dict]:
    """One dict per batch from a ``Collator``: ``clip`` (B, D), ``frames`` (B, T', D) in float32 on
    ``device``, ``index`` (B,), ``valid`` (B,) and the batch's ``bad`` files. Nothing is gathered."""
    for batch, rows in _apply(_encoder(model), batches, device, dtype):
        yield rows | {
            "index": batch["index"].to(device),
            "valid": batch["valid"].to(device),
            "bad": list(batch["bad"]),
        }


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
    """Sentence embeddings (N, D) in float32 on ``device`` for tokenized batches (``input_ids``,
    ``attention_mask``)."""
    out = []
    for batch in batches:
        with _autocast(device, dtype):
            emb = model.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        out.append(emb.sentence.float())
    return torch.cat(out)
