"""Step-indexed batches from shard streams mixed with manifest datasets, for one modality.

The composition of a step's batch is :class:`~videovl.data.samplers.WeightedBatchSampler`'s: each sample's
source is drawn by weight from ``(seed, step)``, a manifest source gives the drawn row, a shard source gives
the next sample of its stream. Streams are kept per lane: with ``W`` loader workers (``W = 1`` without
workers) step ``s`` belongs to lane ``s % W`` and each lane is one slot of the shard order (see
:mod:`~videovl.data.sources.shards`). Every batch says where its lane's streams stand after it; the loop
records that with its checkpoints, so a loader started at any step opens each stream where a straight run
would be, at the same cost at any step (without a record, the position is replayed from the source draws
of every earlier step). The DataLoader hands out its workers' batches in turn, so worker ``w`` of a loader
started at step ``s0`` plays lane ``(s0 + w) % W``.

Every process and worker yields one batch per step forever; the loop's step count ends a run, so no
process can run out of data before another (the WebDataset + DDP hang).

A shard sample that cannot be used (corrupt or truncated member, missing caption or label, unreadable
shard) is logged once per process, named in the batch's ``bad`` list and its place taken by a good sample
of the same batch, so the batch depends on its step alone. Only a batch with no good sample at all looks
elsewhere: the lane's last good sample of that source, else the next readable one of the stream (which
moves the stream on; the recorded position includes it, so a resume still continues exactly).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.utils.data
from torch.utils.data import IterableDataset

from videovl.data.datasets import ClipDataset, Draw
from videovl.data.media.video_io import VideoReadError
from videovl.data.samplers import WeightedBatchSampler
from videovl.data.sources.shards import ShardEntry, ShardSet, slot_stream

__all__ = ["ShardSource", "StreamBatches", "CountedStream"]

log = logging.getLogger(__name__)


class CountedStream:
    """A lane's stream of shard entries that knows its position (entries taken since the stream began)."""

    def __init__(self, entries: Iterator[ShardEntry], position: int):
        self.entries, self.position = entries, position

    def __iter__(self) -> Iterator[ShardEntry]:
        return self

    def __next__(self) -> ShardEntry:
        entry = next(self.entries)
        self.position += 1
        return entry


@dataclass
class ShardSource:
    """A shard set and the decoder (a ClipDataset with no samples of its own) that turns its samples into
    items; ``index_offset`` places its sample indices after the sources before it."""

    shards: ShardSet
    clips: ClipDataset
    index_offset: int = 0

    def __len__(self) -> int:
        return self.shards.total


class StreamBatches(IterableDataset):
    """Endless lists of items, one per step from ``start_step``, for this process; see the module docstring.

    ``parts`` are ClipDatasets (manifest sources, their ``index_offset`` set as in a ConcatDataset) and
    ShardSources, in source order, with one weight each. Each batch's first item carries ``stream``: the
    lane and the position of each shard part's stream after it. ``positions`` (lane -> part -> position,
    as recorded at ``start_step``) opens the streams there; without it they are replayed from step 0.
    """

    def __init__(
        self,
        parts: Sequence[ClipDataset | ShardSource],
        weights: Sequence[float],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        start_step: int = 0,
        positions: Mapping[int, Mapping[int, int]] | None = None,
    ):
        self.parts, self.batch_size = list(parts), batch_size
        self.positions = positions
        self.sampler = WeightedBatchSampler(
            [len(p) for p in self.parts], weights, batch_size, world_size=world_size, seed=seed
        )
        self.rank, self.world_size, self.lanes = rank, world_size, max(1, num_workers)
        self.seed, self.start_step = seed, start_step
        slots = world_size * self.lanes
        for part in self.parts:
            if isinstance(part, ShardSource) and part.shards.total < slots:
                raise ValueError(
                    f"{part.shards.total} shard samples cannot feed {world_size} processes x {self.lanes} "
                    "loader workers; lower data.num_workers or add samples"
                )
        self._warned: set[str] = set()

    def _sources(self, step: int) -> np.ndarray:
        """The source of each of this process's samples at ``step``."""
        sources = self.sampler.batch_sources(step)
        return sources[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def _consumed(self, part: int, lane: int, step: int) -> int:
        """Samples a lane's stream of shard ``part`` gave before ``step`` (a step of that lane), replayed
        from the source draws of every earlier step: only for a resume that recorded no positions."""
        if len(self.parts) == 1:
            return (step - lane) // self.lanes * self.batch_size
        return sum(int((self._sources(s) == part).sum()) for s in range(lane, step, self.lanes))

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        step = self.start_step + worker
        lane = step % self.lanes
        slot, slots = self.rank * self.lanes + lane, self.world_size * self.lanes
        streams, last_good = {}, {}
        for i, part in enumerate(self.parts):
            if isinstance(part, ShardSource):
                if self.positions is not None:  # a lane that has reported nothing has taken nothing
                    start = int(self.positions.get(lane, {}).get(i, 0))
                else:
                    start = self._consumed(i, lane, step)
                entries = slot_stream(
                    part.shards, slot, slots, self.seed + 7919 * i, start, part.shards.shuffle_block
                )
                streams[i] = CountedStream(entries, start)
        first = True
        while True:
            batch = self._batch(step, streams, last_good)
            if first:  # shards that could not even be counted are reported once, by each worker
                batch[0]["bad"] = batch[0]["bad"] + [u for p in self.parts if isinstance(p, ShardSource)
                                                     for u in p.shards.unreadable]  # fmt: skip
                first = False
            # Where this lane's streams stand after the step: the loop records it, so a resume opens them
            # there instead of replaying every earlier step's draws.
            batch[0]["stream"] = {"lane": lane, "positions": {i: s.position for i, s in streams.items()}}
            yield batch
            step += self.lanes

    def _batch(self, step: int, streams: dict, last_good: dict) -> list[dict[str, Any]]:
        rows = self.sampler.global_batch(step)[
            self.rank * self.batch_size : (self.rank + 1) * self.batch_size
        ]
        items: list[dict[str, Any] | None] = []
        wanting: list[tuple[int, int]] = []  # (slot in the batch, part)
        bad: list[str] = []
        first = self.rank * self.batch_size
        for k, row in enumerate(rows.tolist()):
            part_index = int(np.searchsorted(self.sampler.offsets, row, side="right")) - 1
            part = self.parts[part_index]
            if isinstance(part, ClipDataset):
                items.append(part[Draw(row - int(self.sampler.offsets[part_index]), step, first + k)])
                continue
            item = self._decode(part, next(streams[part_index]), (step, first + k), bad)
            items.append(item)
            if item is None:
                wanting.append((k, part_index))
            else:
                last_good[part_index] = item
        good = [item for item in items if item is not None]
        for j, (k, part_index) in enumerate(wanting):
            items[k] = (
                good[j % len(good)]
                if good
                else self._substitute(part_index, streams, last_good, (step, first + k), bad)
            )
        out = [dict(item, bad=list(item.get("bad", []))) for item in items]  # substitutes are shared dicts
        out[0]["bad"] += bad
        return out

    def _decode(
        self, part: ShardSource, entry: ShardEntry, draw: tuple[int, int], bad: list[str]
    ) -> dict[str, Any] | None:
        """The item of a shard sample; ``draw`` (step, slot) seeds its view, as a manifest row's draw does."""
        error = entry.error
        if entry.sample is not None:
            try:
                return part.clips.decode(entry.sample, (*draw, entry.index), part.index_offset + entry.index)
            except VideoReadError as e:
                error = str(e)
        bad.append(entry.name)
        if entry.name not in self._warned:
            self._warned.add(entry.name)
            log.warning("unusable shard sample (replaced): %s", error)
        return None

    def _substitute(
        self, part_index: int, streams: dict, last_good: dict, draw: tuple[int, int], bad: list[str]
    ) -> dict[str, Any]:
        """A whole batch unusable: the lane's last good sample of the source, else the next one read."""
        if part_index in last_good:
            return last_good[part_index]
        part = self.parts[part_index]
        for _ in range(part.shards.total):  # nothing good yet in this lane: read on
            item = self._decode(part, next(streams[part_index]), draw, bad)
            if item is not None:
                last_good[part_index] = item
                return item
        raise RuntimeError(
            f"no readable sample in a whole pass over the shards of a source ({part.shards.urls[:3]}...); "
            "check them with tools/make_shards.py's stats files"
        )
