"""WebDataset shards as a training source: the layout, sample counts, and a resumable stream order.

A shard is a tar in the video2dataset / img2dataset layout: the members of one sample share a key,
``KEY.mp4`` (or .webm, .mkv, .mov, .avi, .m4v) or ``KEY.jpg`` (or .jpeg, .png, .webp, .bmp), ``KEY.txt``
(the caption) and ``KEY.json`` (metadata: a label, or the caption under a configurable key). Tars are
read in order by ``webdataset``'s tar iteration; members stay bytes in memory and become the same
:class:`~videovl.data.sources.manifest.Sample` a manifest line gives, with ``data`` holding the media.

Counts. Each shard's sample count comes from ``NAME_stats.json`` beside ``NAME.tar`` (``count``, as
tools/make_shards.py writes it, or ``successes``, as video2dataset and img2dataset do); a shard without one
is read once to count its samples.

Order (what makes resuming exact). Epoch ``e`` lays the shards out in a permutation drawn from
``(seed, e)`` and concatenates their samples in tar order; that sequence is cut into ``slots`` contiguous,
equal (within one sample) ranges, one per (process, loader worker). A slot's stream is its range of epoch
0, then of epoch 1, and so on, each shuffled in blocks of ``shuffle_block`` consecutive samples: a pure
function of the counts, so position ``p`` of a slot's stream can be reached by skipping whole shards
unread and ``k`` members of the open one undecoded.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from videovl.data.sources.manifest import ManifestError, Sample
from videovl.extras import require

__all__ = [
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "ShardSet",
    "ShardEntry",
    "HashedLabels",
    "expand_shards",
    "stats_path",
    "count_samples",
    "open_shards",
    "to_sample",
    "slot_pieces",
    "read_members",
    "slot_stream",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi", "m4v")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


class HashedLabels(Mapping):
    """Label name -> a stable id (crc32), for labels only known once their shards are read.

    Pretraining only compares ids (same label = positive pair), so a hash serves where a map built from
    every sample up front (``build_label_map``) cannot be.
    """

    def __getitem__(self, label: str) -> int:
        return zlib.crc32(str(label).encode("utf-8")) & 0x7FFFFFFF

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass
class ShardSet:
    """The shards of one source and what their samples carry."""

    urls: list[str]
    counts: list[int]
    modality: str  # "video" or "image"
    text: str  # "caption" or "label": what every sample must carry
    caption_key: str | None = None  # json key of the caption; None: the .txt member
    label_key: str = "label"
    shuffle_block: int = 1  # shuffle each lane's stream in blocks of this many samples (1: tar order)
    unreadable: list[str] = field(default_factory=list)  # shards that could not be counted

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    @property
    def offsets(self) -> np.ndarray:
        """Index of each shard's first sample in the source (shards in the order given)."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)


@dataclass
class ShardEntry:
    """One position of a slot's stream: the sample, or why there is none (``error``)."""

    position: int  # in the slot's stream, over all epochs
    epoch: int
    index: int  # of the sample in its source: shard offset + member number
    name: str  # url#key (or url#member-number when the member is missing)
    sample: Sample | None = None
    error: str | None = None


def expand_shards(pattern: str, where: str = "shards") -> list[str]:
    """The shard paths of a brace pattern (``/data/{00000..00099}.tar``; ``::`` joins patterns)."""
    urls = require("webdataset.shardlists", "reading WebDataset shards").expand_urls(pattern)
    if not urls:
        raise ManifestError(f"{where}: the pattern {pattern!r} names no shards")
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).is_file()]
    if len(missing) == len(urls):
        raise ManifestError(
            f"{where}: none of the {len(urls)} shards of {pattern!r} exists (first: {missing[0]}); "
            "write shards with tools/make_shards.py or check the pattern"
        )
    return urls


def stats_path(url: str) -> Path:
    """``NAME_stats.json`` beside ``NAME.tar`` (video2dataset's name)."""
    path = Path(url)
    return path.with_name(path.name.split(".")[0] + "_stats.json")


def _error_collector(errors: list[str]):
    def handler(exn: Exception) -> bool:
        errors.append(f"{type(exn).__name__}: {str(exn).strip() or 'no message'}"[:300])
        return True  # keep going: a bad member or a truncated tar ends the shard, not the run

    return handler


def _groups(url: str, errors: list[str]) -> Iterator[dict[str, Any]]:
    wds = require("webdataset", "reading WebDataset shards")
    return wds.tarfile_samples([{"url": url}], handler=_error_collector(errors))


def count_samples(url: str) -> int:
    """Samples in a shard: from its stats file if there is one, else by reading it once."""
    stats = stats_path(url)
    if "://" not in url and stats.is_file():
        try:
            info = json.loads(stats.read_text(encoding="utf-8"))
            count = info.get("count", info.get("successes"))
            if isinstance(count, int) and count >= 0:
                return count
        except (OSError, ValueError):
            pass  # a broken stats file: count by reading
    errors: list[str] = []
    count = sum(1 for _ in _groups(url, errors))
    if count == 0 and errors:
        raise OSError(errors[0])
    return count


def open_shards(
    pattern: str,
    kind: str,
    *,
    caption_key: str | None = None,
    label_key: str = "label",
    shuffle_block: int = 1,
    where: str = "shards",
) -> ShardSet:
    """The shards of ``pattern`` with their counts; unreadable ones get count 0 and are listed."""
    modality, what = kind.split("-")
    urls = expand_shards(pattern, where)
    counts, unreadable = [], []
    for url in urls:
        try:
            counts.append(count_samples(url))
        except OSError as e:
            log.warning("%s: unreadable shard %s left out (%s)", where, url, e)
            counts.append(0)
            unreadable.append(url)
    if shuffle_block < 1:
        raise ManifestError(f"{where}: shuffle_block is {shuffle_block}; expected >= 1 (1: tar order)")
    shards = ShardSet(urls, counts, modality, "caption" if what == "text" else "label",
                      caption_key, label_key, shuffle_block, unreadable)  # fmt: skip
    if shards.total == 0:
        raise ManifestError(f"{where}: the {len(urls)} shards of {pattern!r} hold no readable samples")
    return shards


def _text_value(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def to_sample(raw: dict[str, Any], shards: ShardSet, url: str) -> Sample:
    """A shard sample (webdataset's dict of member extension -> bytes) as a manifest ``Sample``;
    raises ValueError, naming the member, when it lacks its media, caption or label."""
    key = raw.get("__key__", "?")
    name = f"{url}#{key}"
    extensions = VIDEO_EXTENSIONS if shards.modality == "video" else IMAGE_EXTENSIONS
    ext = next((e for e in extensions if raw.get(e)), None)
    if ext is None:
        found = sorted(k for k in raw if not k.startswith("__"))
        raise ValueError(f"{name}: no {shards.modality} member ({'/'.join(extensions)}); members: {found}")
    meta: dict[str, Any] = {}
    if raw.get("json"):
        try:
            meta = json.loads(raw["json"])
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{name}.json: not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{name}.json: expected a JSON object, got {type(meta).__name__}")
    if shards.caption_key is not None:
        captions = _text_value(meta.get(shards.caption_key)) or []
    else:
        try:
            captions = [raw["txt"].decode("utf-8")] if raw.get("txt") else []
        except UnicodeDecodeError:
            raise ValueError(f"{name}.txt: not UTF-8 text") from None
    captions = [c.strip() for c in captions if c.strip()]
    label = meta.get(shards.label_key)
    label = None if label is None else str(label)
    if shards.text == "caption" and not captions:
        where = f"json key '{shards.caption_key}'" if shards.caption_key else ".txt member"
        raise ValueError(f"{name}: no caption (the {where} is missing or empty)")
    if shards.text == "label" and label is None:
        raise ValueError(f"{name}: no label (json key '{shards.label_key}')")
    times = {k: float(v) for k in ("start", "end") if isinstance(v := meta.get(k), (int, float))}
    return Sample(path=f"{name}.{ext}", modality=shards.modality, captions=captions, label=label,
                  start=times.get("start"), end=times.get("end"), id=str(key), extra=meta,
                  data=raw[ext])  # fmt: skip


def epoch_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, 11, epoch]).permutation(num_shards)


def slot_pieces(counts: list[int], order: np.ndarray, slot: int, slots: int) -> list[tuple[int, int, int]]:
    """Slot ``slot`` of ``slots``: its ``(shard, first member, end member)`` pieces of the sequence that
    concatenates the shards in ``order``."""
    total = int(sum(counts))
    lo, hi = slot * total // slots, (slot + 1) * total // slots
    pieces, start = [], 0
    for shard in order.tolist():
        a, b = max(lo, start), min(hi, start + counts[shard])
        if a < b:
            pieces.append((shard, a - start, b - start))
        start += counts[shard]
    return pieces


def read_members(url: str, start: int, stop: int) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
    """Exactly ``stop - start`` entries for samples ``start .. stop - 1`` of a shard, in tar order:
    ``(raw sample, None)``, or ``(None, error)`` for each one a truncated or unreadable shard lacks."""
    errors: list[str] = []
    k = start
    for k_read, raw in enumerate(_groups(url, errors)):
        if k_read < start:
            continue  # consumed before a resume (or another slot's): read, never decoded
        yield raw, None
        k = k_read + 1
        if k >= stop:
            return
    reason = errors[0] if errors else f"the shard ends after {k} samples"
    for _ in range(k, stop):
        yield None, reason


def _epoch_entries(shards: ShardSet, slot: int, slots: int, seed: int, epoch: int, skip: int):
    """The entries of a slot's range of ``epoch`` in tar order, from the ``skip``-th on."""
    offsets = shards.offsets
    for shard, a, b in slot_pieces(shards.counts, epoch_order(len(shards.urls), seed, epoch), slot, slots):
        if skip >= b - a:  # finished before: not even opened
            skip -= b - a
            continue
        url = shards.urls[shard]
        for member, (raw, error) in enumerate(read_members(url, a + skip, b), a + skip):
            entry = ShardEntry(0, epoch, int(offsets[shard]) + member, f"{url}#{member}")
            if raw is not None:
                entry.name = f"{url}#{raw.get('__key__', member)}"
                try:
                    entry.sample = to_sample(raw, shards, url)
                except ValueError as e:
                    entry.error = str(e)
            else:
                entry.error = f"{url}: sample {member} unreadable ({error})"
            yield entry
        skip = 0


def slot_stream(
    shards: ShardSet, slot: int, slots: int, seed: int, start: int = 0, block: int = 1
) -> Iterator[ShardEntry]:
    """Slot ``slot``'s endless stream (see the module docstring) from position ``start`` on.

    With ``block > 1`` each run of ``block`` consecutive samples of the slot's range (held in memory as
    bytes) is shuffled by a permutation drawn from ``(seed, epoch, block number)``: batches mix shards'
    neighbours less, and position ``p`` still names one sample, reached by reading its block again.
    """
    length = slot_pieces(shards.counts, np.arange(len(shards.counts)), slot, slots)
    length = sum(b - a for _, a, b in length)
    if length == 0:
        raise ValueError(f"slot {slot} of {slots} gets no samples from {shards.total}")
    block = max(1, block)
    epoch, offset = divmod(start, length)
    while True:
        first = offset - offset % block
        entries = _epoch_entries(shards, slot, slots, seed, epoch, first)
        for begin in range(first, length, block):
            chunk = list(islice(entries, min(block, length - begin)))
            order = np.random.default_rng([seed, 13, epoch, begin]).permutation(len(chunk))
            for j in range(max(0, offset - begin), len(chunk)):
                entry = chunk[order[j]]
                entry.position = epoch * length + begin + j
                yield entry
        offset = 0
        epoch += 1
