"""The cache file of a manifest's table: named arrays in one file, memory-mapped when read.

Layout: ``VVLTABLE``, the header's length (8 bytes, little-endian), a JSON header (the manifest's stamp
and each array's dtype, shape and offset), then the arrays, each aligned to 64 bytes. A reader maps the
file once and takes views, so processes reading the same cache share its pages. Written under a
temporary name and renamed: a reader sees an old whole file or a new whole file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cache_path", "cache_targets", "stamp_of", "write_arrays", "read_arrays"]

_CACHE_VERSION = 1
_MAGIC = b"VVLTABLE"
_ALIGN = 64


def cache_path(manifest: str | Path, user: bool = False) -> Path:
    """Where the table cache of ``manifest`` lives: beside it, or (``user``) in the user's cache folder."""
    manifest = Path(manifest).resolve()
    if not user:
        return manifest.with_name(manifest.name + ".vvltable")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "videovl" / "manifests"
    digest = hashlib.sha1(str(manifest).encode()).hexdigest()[:16]
    return root / f"{digest}-{manifest.name}.vvltable"


def stamp_of(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"version": _CACHE_VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_arrays(target: Path, stamp: dict[str, Any], columns: dict[str, np.ndarray]) -> None:
    entries, offset = {}, 0
    for name, arr in columns.items():
        entries[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset}
        offset += -(-arr.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"stamp": stamp, "arrays": entries}).encode()
    header += b" " * (-(len(_MAGIC) + 8 + len(header)) % _ALIGN)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(_MAGIC + len(header).to_bytes(8, "little") + header)
            for arr in columns.values():
                raw = np.ascontiguousarray(arr).tobytes()
                f.write(raw + b"\0" * (-len(raw) % _ALIGN))
        os.replace(tmp, target)  # readers see the old file or the whole new one, never a part
    finally:
        tmp.unlink(missing_ok=True)


def read_arrays(target: Path, stamp: dict[str, Any]) -> dict[str, np.ndarray] | None:
    with target.open("rb") as f:
        head = f.read(len(_MAGIC) + 8)
        size = int.from_bytes(head[len(_MAGIC) :], "little")
        if head[: len(_MAGIC)] != _MAGIC or size > target.stat().st_size:
            return None
        header = json.loads(f.read(size))
    if header["stamp"] != stamp:
        return None
    start = len(_MAGIC) + 8 + int.from_bytes(head[len(_MAGIC) :], "little")
    raw = np.memmap(target, dtype=np.uint8, mode="r")
    columns = {}
    for name, e in header["arrays"].items():
        dtype, shape = np.dtype(e["dtype"]), tuple(e["shape"])
        nbytes = dtype.itemsize * int(np.prod(shape))
        begin = start + e["offset"]
        if begin + nbytes > len(raw):
            return None
        columns[name] = raw[begin : begin + nbytes].view(dtype).reshape(shape)
    return columns


def cache_targets(path: Path) -> list[Path]:
    """Beside the manifest, then the user's cache folder (when there is a home to find it in)."""
    targets = [cache_path(path)]
    with contextlib.suppress(RuntimeError, KeyError):  # no home directory: beside the manifest only
        targets.append(cache_path(path, user=True))
    return targets
