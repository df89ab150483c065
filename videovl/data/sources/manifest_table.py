"""Manifests of millions of lines: samples held in a few flat arrays instead of one object each.

A :class:`SampleTable` is a read-only sequence of :class:`~videovl.data.sources.Sample`: indexing builds
the same record :func:`~videovl.data.sources.manifest.read_manifest_objects` returns for that line, from numpy
arrays (one byte buffer and one offset array per text column, one flag byte per sample). Python objects
per sample are what make a list of a million samples cost 600 MB, and what DataLoader workers copy page by
page as they touch their reference counts (pytorch/pytorch#13246); a handful of arrays cost a fifth of that,
and workers share their pages untouched.

Reading: the file is cut into blocks of whole lines. A block of plain lines (only the keys of the format,
the usual types, no ``null``) is parsed by ``pyarrow.json`` and checked column-wise; any other block (extra
keys, comments, mixed types, anything pyarrow rejects) goes line by line through
:func:`~videovl.data.sources.parse_fields`, which also raises every error with its file and line. Both
paths store the same values; without pyarrow (it comes with the ``train`` extra) every block goes line by
line.

Cache: the arrays of a large manifest are written beside it as ``<name>.vvltable`` (or, when that folder is
not writable, under ``$XDG_CACHE_HOME/videovl/manifests``) and memory-mapped on the next read, so every
process on a node shares one copy. The cache records the manifest's size and modification time and is
ignored when either differs; it is written under a temporary name and renamed, and a cache that cannot be
read or written is skipped, never an error. The file format is in :mod:`videovl.data.sources.manifest_cache`.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import operator
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from videovl.data.sources.manifest import ManifestError, Sample, parse_fields
from videovl.data.sources.manifest_cache import cache_path, cache_targets, read_arrays, stamp_of, write_arrays
from videovl.extras import optional

__all__ = [
    "SampleTable",
    "read_manifest",
    "load_table",
    "cache_path",
    "modalities",
    "caption_counts",
    "labels",
]

log = logging.getLogger(__name__)

_IMAGE, _HAS_START, _HAS_END, _ID_IS_MEDIA = 1, 2, 4, 8  # bits of the per-sample flag byte
_KEYS = {"video", "image", "caption", "label", "start", "end", "id"}
_BLOCK_BYTES = 32 << 20
CACHE_MIN_BYTES = 8 << 20  # smaller manifests parse in well under a second: no cache file beside them
# Every character str.strip() removes, so the column-wise check finds each caption Python would change.
_SPACE = "".join(chr(c) for c in range(0x3000 + 1) if chr(c).isspace())
_SPACE_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _SPACE) + "]"
_EDGE_SPACE = f"^{_SPACE_CLASS}|{_SPACE_CLASS}$"


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogatepass")


class _Strings:
    """Strings in one UTF-8 buffer; string ``i`` is ``data[offsets[i]:offsets[i + 1]]``."""

    __slots__ = ("data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets

    def __getitem__(self, i: int) -> str:
        return _decode(self.data[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _offsets(lengths: np.ndarray) -> np.ndarray:
    total = int(lengths.sum()) if len(lengths) else 0
    out = np.zeros(len(lengths) + 1, dtype=np.int32 if total < 2**31 else np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


class SampleTable(Sequence[Sample]):
    """Samples of a manifest in flat arrays; ``table[i]`` is a fresh :class:`Sample`, ``table[a:b]`` and
    :meth:`take` are views sharing the arrays. Build one with :func:`load_table` or :meth:`from_samples`."""

    def __init__(self, columns: dict[str, np.ndarray], base: str | Path, rows: np.ndarray | None = None):
        self.columns, self.base, self.rows = columns, Path(base), rows
        c = columns
        self._flags = c["flags"]
        self._media = _Strings(c["media_data"], c["media_offsets"])
        self._captions = _Strings(c["caption_data"], c["caption_offsets"])
        self._caption_index = c["caption_index"]
        self._ids = _Strings(c["id_data"], c["id_offsets"])
        self._times = c.get("times")  # (N, 2) start, end; absent when no sample has either
        self._label_codes = c.get("label_codes")
        self._label_names = (
            [_decode(b) for b in _split(c["label_data"], c["label_offsets"])] if "label_codes" in c else []
        )
        self._extras = _Strings(c["extra_data"], c["extra_offsets"]) if "extra_data" in c else None

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], base: str | Path = "") -> SampleTable:
        """A table of ``samples`` (their ``path`` stored as given; ``extra`` must be JSON data)."""
        builder = _Builder()
        for s in samples:
            builder.add(s.modality, s.path, s.captions, s.label, s.start, s.end, s.id, s.extra)
        return builder.finish(base)

    def __len__(self) -> int:
        return len(self._flags) if self.rows is None else len(self.rows)

    def _row(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        return i if self.rows is None else int(self.rows[i])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        r = self._row(operator.index(i))
        flags = int(self._flags[r])
        media = self._media[r]
        first, last = int(self._caption_index[r]), int(self._caption_index[r + 1])
        code = -1 if self._label_codes is None else int(self._label_codes[r])
        times = self._times
        extra = self._extras[r] if self._extras is not None else ""
        return Sample(
            path=str(self.base / media),
            modality="image" if flags & _IMAGE else "video",
            captions=[self._captions[k] for k in range(first, last)],
            label=self._label_names[code] if code >= 0 else None,
            start=float(times[r, 0]) if flags & _HAS_START else None,
            end=float(times[r, 1]) if flags & _HAS_END else None,
            id=media if flags & _ID_IS_MEDIA else self._ids[r],
            extra=json.loads(extra) if extra else {},
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __add__(self, other: Iterable[Sample]) -> list[Sample]:
        return [*self, *other]

    def __radd__(self, other: Iterable[Sample]) -> list[Sample]:
        return [*other, *self]

    def __repr__(self) -> str:
        return f"SampleTable({len(self)} samples, base={str(self.base)!r})"

    def take(self, indices: Sequence[int] | np.ndarray) -> SampleTable:
        """The samples at ``indices`` (in that order), sharing this table's arrays."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for {len(self)} samples")
        idx = np.where(idx < 0, idx + len(self), idx)
        return SampleTable(self.columns, self.base, idx if self.rows is None else self.rows[idx])

    def _all(self, column: np.ndarray) -> np.ndarray:
        return column if self.rows is None else column[self.rows]

    # Column-wise views for checks over every sample (no Sample objects built).
    def modalities(self) -> np.ndarray:
        return np.where(self._all(self._flags) & _IMAGE, "image", "video")

    def caption_counts(self) -> np.ndarray:
        return self._all(np.diff(self._caption_index))

    def labels(self) -> np.ndarray:
        names = np.array([*self._label_names, None], dtype=object)
        if self._label_codes is None:
            return np.full(len(self), None, dtype=object)
        return names[self._all(self._label_codes)]  # -1 (no label) picks the trailing None


def _split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def modalities(samples: Sequence[Sample]) -> np.ndarray:
    """``"video"``/``"image"`` per sample, column-wise for a :class:`SampleTable`."""
    if isinstance(samples, SampleTable):
        return samples.modalities()
    return np.array([s.modality for s in samples], dtype="<U5")


def caption_counts(samples: Sequence[Sample]) -> np.ndarray:
    """Number of captions per sample."""
    if isinstance(samples, SampleTable):
        return samples.caption_counts()
    return np.array([len(s.captions) for s in samples], dtype=np.int64)


def labels(samples: Iterable[Sample]) -> np.ndarray:
    """Label per sample (None where there is none), an object array."""
    if isinstance(samples, SampleTable):
        return samples.labels()
    out = [s.label for s in samples]
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


class _Builder:
    """Collects samples block by block (from parsed lines or from pyarrow columns) into table arrays."""

    def __init__(self):
        self.flags: list[np.ndarray] = []
        self.text: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
            k: ([], []) for k in ("media", "caption", "id", "extra")
        }
        self.caption_counts: list[np.ndarray] = []
        self.times: list[np.ndarray] = []
        self.label_codes: list[np.ndarray] = []
        self.label_names: dict[str, int] = {}  # first-seen codes; renumbered in sorted order at the end
        self.pending: list[tuple] = []

    def _text(self, key: str, data: np.ndarray, lengths: np.ndarray) -> None:
        self.text[key][0].append(data)
        self.text[key][1].append(lengths.astype(np.int64, copy=False))

    def _label_code(self, name: str | None) -> int:
        return -1 if name is None else self.label_names.setdefault(name, len(self.label_names))

    def add(self, modality, media, captions, label, start, end, id_, extra) -> None:
        self.pending.append((modality, media, captions, label, start, end, id_, extra))
        if len(self.pending) >= 65536:
            self.flush()

    def flush(self) -> None:
        """Turn the pending parsed lines into one block of arrays."""
        rows, self.pending = self.pending, []
        if not rows:
            return
        flags = np.zeros(len(rows), dtype=np.uint8)
        times = np.zeros((len(rows), 2), dtype=np.float64)
        codes = np.empty(len(rows), dtype=np.int32)
        texts: dict[str, list[str]] = {"media": [], "caption": [], "id": [], "extra": []}
        counts = np.empty(len(rows), dtype=np.int64)
        for i, (modality, media, captions, label, start, end, id_, extra) in enumerate(rows):
            flags[i] = (
                (modality == "image") * _IMAGE
                + (start is not None) * _HAS_START
                + (end is not None) * _HAS_END
                + (id_ is None or id_ == media) * _ID_IS_MEDIA
            )
            times[i] = (start or 0.0, end or 0.0)
            codes[i] = self._label_code(label)
            texts["media"].append(media)
            texts["caption"] += captions
            counts[i] = len(captions)
            texts["id"].append("" if id_ is None or id_ == media else id_)
            texts["extra"].append(json.dumps(extra, ensure_ascii=False) if extra else "")
        for key, strings in texts.items():
            encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            self._text(key, np.frombuffer(b"".join(encoded), dtype=np.uint8), lengths)
        self._block(flags, counts, times, codes)

    def _block(self, flags, counts, times, codes) -> None:
        self.flags.append(flags)
        self.caption_counts.append(counts)
        self.times.append(times)
        self.label_codes.append(codes)

    def add_arrow(self, table) -> bool:
        """Add a pyarrow table of plain lines; False (nothing added) when a column is not plain, so the
        block goes line by line instead (which also finds and reports any error)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        names = set(table.column_names)
        if not names <= _KEYS or table.num_rows == 0:
            return False
        cols = {k: table.column(k).combine_chunks() for k in names}
        n = table.num_rows
        if any(not pa.types.is_string(cols[k].type) for k in ("video", "image", "label", "id") if k in cols):
            return False
        present = {k: np.asarray(cols[k].is_valid()) for k in cols}
        absent = np.zeros(n, dtype=bool)
        is_video, is_image = present.get("video", absent), present.get("image", absent)
        if not np.all(is_video ^ is_image):
            return False
        if "video" in cols and "image" in cols:
            media = pc.coalesce(cols["video"], cols["image"])
        else:
            media = cols["video" if "video" in cols else "image"]
        media_data, media_lengths = _arrow_strings(media)
        if np.any(media_lengths == 0):
            return False
        caption = cols.get("caption")
        if caption is None:
            counts, flat = np.zeros(n, dtype=np.int64), pa.array([], pa.string())
        elif pa.types.is_string(caption.type):
            counts, flat = present["caption"].astype(np.int64), caption.drop_null()
        elif pa.types.is_list(caption.type) and pa.types.is_string(caption.type.value_type):
            counts = np.asarray(caption.value_lengths().fill_null(0)).astype(np.int64)
            flat = caption.flatten()
        else:
            return False
        if len(flat) and pc.any(pc.match_substring_regex(flat, _EDGE_SPACE)).as_py():
            flat = pa.array([s.strip() for s in flat.to_pylist()], pa.string())
        times = np.zeros((n, 2), dtype=np.float64)
        for j, key in enumerate(("start", "end")):
            if key not in cols:
                continue
            col = cols[key]
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                return False
            times[:, j] = np.asarray(col.cast(pa.float64(), safe=False).fill_null(0.0))
        has_start, has_end = present.get("start", absent), present.get("end", absent)
        if np.any(has_start & has_end & (times[:, 1] < times[:, 0])):
            return False
        ids = cols.get("id")
        id_is_media = ~present.get("id", absent)
        if ids is not None:
            id_is_media |= np.asarray(pc.equal(ids, media).fill_null(False))
            ids = pc.if_else(pa.array(id_is_media), pa.scalar("", pa.string()), ids)
        else:
            ids = pa.array([""] * n, pa.string())
        codes = np.full(n, -1, dtype=np.int32)
        if "label" in cols:
            encoded = cols["label"].dictionary_encode()
            remap = np.array([self._label_code(s) for s in encoded.dictionary.to_pylist()], dtype=np.int32)
            local = np.asarray(encoded.indices.fill_null(-1)).astype(np.int64)
            codes = np.where(local >= 0, remap[np.maximum(local, 0)] if len(remap) else -1, -1).astype(
                np.int32
            )
        flags = (
            is_image * _IMAGE + has_start * _HAS_START + has_end * _HAS_END + id_is_media * _ID_IS_MEDIA
        ).astype(np.uint8)
        self._text("media", media_data, media_lengths)
        self._text("caption", *_arrow_strings(flat))
        self._text("id", *_arrow_strings(ids))
        self._text("extra", np.zeros(0, dtype=np.uint8), np.zeros(n, dtype=np.int64))
        self._block(flags, counts, times, codes)
        return True

    def finish(self, base: str | Path) -> SampleTable:
        self.flush()
        columns: dict[str, np.ndarray] = {"flags": _cat(self.flags, np.uint8)}
        for key, (datas, lengths) in self.text.items():
            if key != "extra" or any(len(d) for d in datas):
                columns[f"{key}_data"] = _cat(datas, np.uint8)
                columns[f"{key}_offsets"] = _offsets(_cat(lengths, np.int64))
            datas.clear(), lengths.clear()  # the pieces go before the next column is built
        columns["caption_index"] = _offsets(_cat(self.caption_counts, np.int64))
        flags = columns["flags"]
        if np.any(flags & (_HAS_START | _HAS_END)):
            columns["times"] = np.concatenate(self.times) if self.times else np.zeros((0, 2))
        if self.label_names:
            order = sorted(self.label_names)
            renumber = np.empty(len(order), dtype=np.int32)
            for new, name in enumerate(order):
                renumber[self.label_names[name]] = new
            codes = _cat(self.label_codes, np.int32)
            columns["label_codes"] = np.where(codes >= 0, renumber[np.maximum(codes, 0)], -1).astype(np.int32)
            encoded = [name.encode("utf-8", "surrogatepass") for name in order]
            columns["label_data"] = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
            columns["label_offsets"] = _offsets(np.array([len(e) for e in encoded], dtype=np.int64))
        return SampleTable(columns, base)


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _arrow_strings(arr) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, lengths) of a pyarrow string array without nulls, copied out of Arrow memory."""
    import pyarrow as pa

    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data_buffer = arr.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return data[offsets[0] : offsets[-1]].copy(), np.diff(offsets)


def _blocks(path: Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, bytes) of blocks of whole lines; a partial last line is read again with the next block
    (cheaper than joining it to the next read)."""
    with path.open("rb") as f:
        while True:
            offset = f.tell()
            chunk = f.read(_BLOCK_BYTES)
            if not chunk:
                return
            cut = chunk.rfind(b"\n") + 1
            if cut and len(chunk) == _BLOCK_BYTES:
                f.seek(offset + cut)
                chunk = chunk[:cut]
            elif len(chunk) == _BLOCK_BYTES:  # a line longer than a block: read on to its end
                chunk += f.readline()
            yield offset, chunk


class _LineNumbers:
    """The line number at a byte offset, counted only when asked (a slow block's errors need it; a file of
    fast blocks never does)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.line = path, 0, 1

    def at(self, offset: int) -> int:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            while self.offset < offset:
                chunk = f.read(min(_BLOCK_BYTES, offset - self.offset))
                if not chunk:
                    break
                self.line += chunk.count(b"\n")
                self.offset += len(chunk)
        return self.line


def _utf8(block: bytes) -> bool:
    """Whether ``block`` is valid UTF-8 (pyarrow does not check; the line reader names the bad line)."""
    try:
        return block.isascii() or bool(block.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def _parse_lines(builder: _Builder, block: bytes, first: int, path: Path) -> None:
    """The line-by-line reader (the rules of :func:`~videovl.data.sources.parse_fields`)."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as e:
        number = first + block[: e.start].count(b"\n")
        raise ManifestError(f"{path}:{number}: not valid UTF-8 (byte {block[e.start]:#x})") from None
    # Universal newlines, as the object reader's text file: a lone \r ends a line too.
    for number, line in enumerate(io.StringIO(text, newline=None), first):
        text_line = line.strip()
        if not text_line or text_line.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(text_line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        builder.add(*parse_fields(obj, where))


def _parse_file(path: Path, base: str | Path) -> SampleTable:
    # pyarrow is a speed-up (extra "train"): without it every block goes line by line, to the same table.
    pj = optional("pyarrow.json")
    pa = optional("pyarrow")
    builder, lines = _Builder(), _LineNumbers(path)
    for offset, block in _blocks(path):
        # pyarrow cannot tell a key set to null from a missing one, nor does it split lines at a lone \r.
        fast = pj is not None and b"null" not in block and b"\r" not in block and _utf8(block)
        if fast:
            try:
                # One thread: on a busy machine no slower, and worker threads' heaps would keep 40 MB.
                options = pj.ReadOptions(block_size=4 << 20, use_threads=False)
                parsed = pj.read_json(pa.BufferReader(block), read_options=options)
            except (pa.ArrowException, ValueError):
                fast = False
        if fast:
            builder.flush()  # keep line order: lines pending from a slow block go first
            fast = builder.add_arrow(parsed)
            del parsed
        if not fast:
            _parse_lines(builder, block, lines.at(offset), path)
        del block
    table = builder.finish(base)
    del builder
    _release_freed_memory()
    if len(table) == 0:
        raise ManifestError(f"manifest {path} holds no samples")
    return table


def _release_freed_memory() -> None:
    """Hand the parse's freed blocks back to the OS. Arrow's pool and glibc's malloc keep freed memory for
    reuse; after a read that is twice the table's size, held by a process (and each DataLoader worker forked
    from it) that will not parse again."""
    pa = optional("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def load_table(path: str | Path, root: str | Path | None = None, *, cache: bool | None = None) -> SampleTable:
    """Read a manifest into a :class:`SampleTable` (see the module docstring); ``cache`` None: only for
    manifests of at least ``CACHE_MIN_BYTES``."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    base = Path(root) if root is not None else path.resolve().parent
    stamp = stamp_of(path)
    use_cache = cache if cache is not None else stamp["size"] >= CACHE_MIN_BYTES
    targets = cache_targets(path) if use_cache else []
    for target in targets:
        try:
            columns = read_arrays(target, stamp) if target.is_file() else None
            if columns is not None:
                return SampleTable(columns, base)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.info("manifest cache %s unreadable (%s); reading the manifest", target, e)
    table = _parse_file(path, base)
    if targets and stamp_of(path) == stamp:  # a manifest changed while read is not cached
        for target in targets:
            try:
                write_arrays(target, stamp, table.columns)
                break
            except OSError as e:
                log.info("cannot write the manifest cache %s (%s)", target, e)
    return table


def read_manifest(
    path: str | Path, root: str | Path | None = None, *, cache: bool | None = None
) -> SampleTable:
    """Read a JSON Lines manifest (the format of :mod:`videovl.data.sources.manifest`) into a
    :class:`SampleTable`: a sequence of :class:`Sample` held in a few flat arrays; errors name the file and
    the 1-based line number. ``cache``: None caches large manifests only, True/False always/never.
    """
    return load_table(path, root, cache=cache)
