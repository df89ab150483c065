"""Decoding videos and images into uint8 frames.

decord is the primary backend (fast random access); PyAV is the fallback, tried automatically when decord
fails on a file (``backend="auto"``) or used alone (``backend="av"``). Both number frames by presentation
order (the i-th smallest packet pts), so the same indices give the same frames on the same file: PyAV
decodes from the keyframe before the first wanted frame and matches frames by pts. decord's random access
is wrong on open-GOP streams, so "auto" checks it against PyAV's packet table first (see _candidates).

Every function takes the media as a path or as the file's bytes (a shard member read into memory):
both backends and Pillow read bytes through a file-like object, so no temporary file is written and
nothing downstream knows which it was. ``name`` labels bytes in errors (e.g. ``shard.tar#key``).

Every failure (missing, empty, truncated, corrupt file, no video stream) becomes one
:class:`VideoReadError` that names the file and each backend's error.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videovl.data.media.sampling import SAMPLINGS, frame_window, multi_view_indices, sample_indices

__all__ = [
    "BACKENDS",
    "Media",
    "IMAGE_SUFFIXES",
    "VideoInfo",
    "VideoReadError",
    "is_image",
    "probe",
    "read_frames",
    "read_image",
    "load_clip",
]

BACKENDS = ("auto", "decord", "av")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

Media = str | os.PathLike | bytes  # a file's path, or its whole content


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    duration: float  # seconds


class VideoReadError(Exception):
    """A file no backend could read. ``errors`` maps each backend tried (or "file") to its error."""

    def __init__(self, path: str | Path, errors: dict[str, str]):
        self.path, self.errors = str(path), dict(errors)
        detail = "; ".join(f"{name}: {err}" for name, err in self.errors.items())
        super().__init__(f"cannot read {self.path} ({detail})")

    def __reduce__(self):  # keep it picklable across DataLoader worker processes
        return type(self), (self.path, self.errors)


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _default_threads() -> int:
    """One decoding thread inside DataLoader workers (the workers are the parallelism); auto outside."""
    import torch.utils.data

    return 1 if torch.utils.data.get_worker_info() is not None else 0


class _DecordReader:
    name = "decord"

    def __init__(self, source: str | bytes, num_threads: int):
        import decord

        source = io.BytesIO(source) if isinstance(source, bytes) else source
        self._vr = decord.VideoReader(source, ctx=decord.cpu(0), num_threads=num_threads)
        n, fps = len(self._vr), float(self._vr.get_avg_fps())
        if n <= 0:
            raise RuntimeError("no frames")
        self.info = VideoInfo(n, fps, n / fps if fps > 0 else 0.0)
        self.key_indices = [int(k) for k in self._vr.get_key_indices()]

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self._vr.get_batch(indices.tolist()).asnumpy()

    def close(self) -> None:
        self._vr = None


class _AVReader:
    name = "av"

    def __init__(self, source: str | bytes, num_threads: int):
        import av

        self._container = av.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        try:
            if not self._container.streams.video:
                raise RuntimeError("no video stream")
            self._stream = stream = self._container.streams.video[0]
            if num_threads != 1:
                stream.thread_type = "AUTO"
            stream.codec_context.thread_count = num_threads
            # Demuxing without decoding is cheap; it gives the frame count and the pts of every frame,
            # the same table decord builds, so both backends number frames identically (B-frames too).
            self._packets = [
                (p.pts, p.dts, p.is_keyframe) for p in self._container.demux(stream) if p.pts is not None
            ]
            self._pts = sorted(p[0] for p in self._packets)
            if not self._pts:
                raise RuntimeError("no video packets")
            if stream.frames > len(self._pts):  # mp4 headers declare the count; mkv/webm say 0
                raise RuntimeError(
                    f"truncated: the header declares {stream.frames} frames, {len(self._pts)} present"
                )
            rate = stream.average_rate or stream.guessed_rate
            seconds = float((self._pts[-1] - self._pts[0]) * stream.time_base) if stream.time_base else 0.0
            n = len(self._pts)
            fps = float(rate) if rate else (n - 1) / seconds if seconds > 0 else 1.0
            self.info = VideoInfo(n, fps, n / fps)
            rank = {pts: i for i, pts in enumerate(self._pts)}
            self.key_indices = sorted(rank[p[0]] for p in self._packets if p[2])
        except BaseException:
            self._container.close()
            raise

    def _decode_from(self, target: int | None, wanted: dict[int, int]) -> dict[int, np.ndarray]:
        """Seek (``None``: rewind) and decode until every pts in ``wanted`` is seen."""
        self._container.seek(self._pts[0] if target is None else target, stream=self._stream, backward=True)
        found: dict[int, np.ndarray] = {}
        for count, frame in enumerate(self._container.decode(self._stream)):
            key = frame.pts
            if key is None and target is None and count < len(self._pts):
                key = self._pts[count]  # no pts (rare): from the start, the count is the frame number
            if key in wanted:
                found[key] = frame.to_ndarray(format="rgb24")
                if len(found) == len(wanted):
                    break
        return found

    def get(self, indices: np.ndarray) -> np.ndarray:
        wanted = {self._pts[i]: i for i in indices.tolist()}
        first = min(wanted)
        # Start at the last keyframe, in decode order, that precedes the first wanted frame and is not
        # displayed after it (open-GOP leading B-frames need the previous keyframe). Seek by its dts,
        # which is never later than its pts, so the demuxer lands on it or on an earlier keyframe.
        order = next(k for k, p in enumerate(self._packets) if p[0] == first)
        keys = [p for p in self._packets[: order + 1] if p[2] and p[0] <= first]
        target = (keys[-1][1] if keys[-1][1] is not None else keys[-1][0]) if keys else None
        found = self._decode_from(target, wanted)
        if len(found) < len(wanted):  # seeking misbehaved on this file: decode from the start instead
            found = self._decode_from(None, wanted)
        missing = sorted(i for pts, i in wanted.items() if pts not in found)
        if missing:
            raise RuntimeError(f"frames {missing} of {self.info.num_frames} could not be decoded")
        return np.stack([found[self._pts[i]] for i in indices.tolist()])

    def close(self) -> None:
        self._container.close()


_READERS = {"decord": _DecordReader, "av": _AVReader}


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip() or 'no message'}"


# Per process, keyed by (path, mtime, size): whether decord's frame table matched PyAV's. A pure fact
# about the file, kept so the cross-check costs one extra open per file and process, not one per read.
_DECORD_EXACT: dict[tuple[str, int, int], bool] = {}
_DECORD_EXACT_MAX = 200_000


def _open(name: str, path: str | bytes, threads: int, errors: dict[str, str]) -> Any:
    try:
        return _READERS[name](path, threads)
    except Exception as e:  # whatever the library raises, the next backend gets its chance
        errors[name] = _describe(e)
        return None


def _candidates(path: str | bytes, backend: str, threads: int, errors: dict[str, str]) -> Iterator[Any]:
    """Open readers lazily, in the order to try them; each is closed when the caller moves on.

    In "auto" mode decord is first checked against PyAV's packet table: decord numbers keyframes by
    decode order, so on open-GOP streams its seeks land a few frames off, and it can hang when a
    container over-reports its frame count. A file whose frame count or keyframe positions disagree
    is decoded by PyAV.
    """
    opened = []
    try:
        if backend != "auto":
            if (reader := _open(backend, path, threads, errors)) is not None:
                opened.append(reader)
                yield reader
            return
        if isinstance(path, bytes):
            key = ("bytes", hashlib.blake2b(path, digest_size=16).hexdigest(), len(path))
        else:
            stat = os.stat(path)
            key = (path, stat.st_mtime_ns, stat.st_size)
        exact = _DECORD_EXACT.get(key)
        dec = _open("decord", path, threads, errors) if exact is not False else None
        ref = None
        if dec is not None:
            opened.append(dec)
            if exact is None and (ref := _open("av", path, threads, errors)) is not None:
                opened.append(ref)
                exact = dec.info.num_frames == ref.info.num_frames and dec.key_indices == ref.key_indices
                if len(_DECORD_EXACT) >= _DECORD_EXACT_MAX:
                    _DECORD_EXACT.clear()
                _DECORD_EXACT[key] = exact
            if exact is not False:
                yield dec
        if exact is False:
            errors["decord"] = "skipped: its frame table disagrees with the container's (open GOP?)"
        if ref is None and "av" not in errors and (ref := _open("av", path, threads, errors)) is not None:
            opened.append(ref)
        if ref is not None:
            yield ref
    finally:
        for reader in opened:
            reader.close()


def _source(media: Media, name: str | None) -> tuple[str | bytes, str]:
    """The media as a path string or bytes, and the name errors give it; missing and empty fail here."""
    if isinstance(media, (bytes, bytearray, memoryview)):
        data, label = bytes(media), name or f"<{len(media)} bytes>"
        if not data:
            raise VideoReadError(label, {"file": "is empty (0 bytes)"})
        return data, label
    path = str(media)
    if not os.path.isfile(path):
        raise VideoReadError(name or path, {"file": "does not exist"})
    if os.path.getsize(path) == 0:
        raise VideoReadError(name or path, {"file": "is empty (0 bytes)"})
    return path, name or path


def _with_reader(
    media: Media, backend: str, fn: Callable[[Any], Any], num_threads: int | None, name: str | None = None
) -> Any:
    """Call ``fn(reader)`` with each usable backend in turn until one succeeds."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}; use 'auto' to try decord then PyAV")
    source, path = _source(media, name)
    threads = _default_threads() if num_threads is None else num_threads
    errors: dict[str, str] = {}
    with closing(_candidates(source, backend, threads, errors)) as readers:
        for reader in readers:
            try:
                return fn(reader)
            except IndexError:  # a caller's bad index, not a bad file
                raise
            except Exception as e:
                errors[reader.name] = _describe(e)
    raise VideoReadError(path, errors)


def _fetch(reader: Any, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Frames at ``indices`` (any order, repeats allowed), each distinct frame decoded once."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = reader.info.num_frames
    if indices.size == 0 or indices.min() < 0 or indices.max() >= n:
        raise IndexError(f"frame indices must be in [0, {n}) and non-empty, got {indices.tolist()}")
    if (np.diff(indices) > 0).all():  # the usual case: increasing, nothing to reorder or copy
        return reader.get(indices)
    unique, inverse = np.unique(indices, return_inverse=True)
    return reader.get(unique)[inverse]


def probe(
    media: Media, backend: str = "auto", num_threads: int | None = None, name: str | None = None
) -> VideoInfo:
    """Frame count, average fps and duration of a video (a path or its bytes)."""
    return _with_reader(media, backend, lambda r: r.info, num_threads, name)


def read_frames(
    media: Media,
    indices: Sequence[int] | np.ndarray,
    backend: str = "auto",
    num_threads: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3) at 0-based ``indices``; out-of-range indices raise IndexError."""
    return _with_reader(media, backend, lambda r: _fetch(r, indices), num_threads, name)


def read_image(media: Media, name: str | None = None) -> np.ndarray:
    """An image (a path or its bytes) as a one-frame clip: uint8 RGB (1, H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(media, (bytes, bytearray, memoryview)):
        label, opened = name or f"<{len(media)} bytes>", io.BytesIO(bytes(media))
    else:
        label = opened = str(media)
        if not os.path.isfile(opened):
            raise VideoReadError(name or label, {"file": "does not exist"})
        label = name or label
    try:
        with Image.open(opened) as im:
            return np.array(im.convert("RGB"))[None]  # a writable copy, as torch.as_tensor wants
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise VideoReadError(label, {"pillow": f"{type(e).__name__}: {e}"}) from e


def load_clip(
    media: Media,
    *,
    num_frames: int,
    train: bool = False,
    rng: np.random.Generator | None = None,
    start: float | None = None,
    end: float | None = None,
    backend: str = "auto",
    sampling: str = "segment",
    stride: int = 4,
    num_views: int = 1,
    view: int = 0,
    num_threads: int | None = None,
    modality: str | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode one clip of ``num_frames`` frames as uint8 (T, H, W, 3); images give (1, H, W, 3).

    ``media`` is a path or the file's bytes. ``modality`` ("video" or "image") says which it holds;
    by default a path's suffix decides, and bytes are a video. ``name`` labels the media in errors.

    ``start``/``end`` (seconds) restrict the window; ``sampling`` is "segment" (TSN: a random frame per
    segment when training, the centre otherwise) or "dense" (every ``stride``-th frame). With
    ``num_views > 1`` the ``view``-th of that many evenly spread test clips is returned. Videos shorter
    than the clip repeat frames rather than fail.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling={sampling!r} is not one of {SAMPLINGS}")
    if not 0 <= view < num_views:
        raise ValueError(f"view={view} must be in [0, num_views={num_views})")
    if modality not in (None, "video", "image"):
        raise ValueError(f"modality={modality!r} is not 'video' or 'image'")
    if modality is None:
        modality = (
            "video" if isinstance(media, (bytes, bytearray, memoryview)) or not is_image(media) else "image"
        )
    if modality == "image":
        return read_image(media, name)

    def clip(reader: Any) -> np.ndarray:
        first, last = frame_window(reader.info.num_frames, reader.info.fps, start, end)
        if num_views > 1:
            indices = multi_view_indices(
                first, last, num_frames, num_views, sampling=sampling, stride=stride
            )[view]
        else:
            indices = sample_indices(
                first, last, num_frames, sampling=sampling, train=train, rng=rng, stride=stride
            )
        return _fetch(reader, indices)

    return _with_reader(media, backend, clip, num_threads, name)
