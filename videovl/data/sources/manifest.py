"""The manifest format: the contract between data and everything else.

JSON Lines, one sample per line::

    {"video": "clips/0001.mp4", "caption": ["a dog runs", "a puppy running"], "id": "0001"}
    {"video": "clips/0002.mp4", "label": "juggling", "start": 3.0, "end": 13.0}
    {"image": "images/cat.png", "caption": "a cat on a mat"}

``video`` or ``image`` (exactly one) is required; ``caption`` (a string or a list of strings),
``label`` (a string), ``start``/``end`` (seconds) and ``id`` are optional. Relative media paths resolve
against the manifest's folder unless a ``root`` is given. Blank lines and lines starting with ``#`` are
skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ManifestError",
    "Sample",
    "parse_fields",
    "read_manifest_objects",
    "write_manifest",
]

_KEYS = {"video", "image", "caption", "label", "start", "end", "id"}


class ManifestError(ValueError):
    """A manifest line that does not fit the format; the message names the file and line."""


@dataclass
class Sample:
    path: str  # absolute (or root-joined) media path
    modality: str  # "video" or "image"
    captions: list[str] = field(default_factory=list)
    label: str | None = None
    start: float | None = None
    end: float | None = None
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys are kept, not interpreted
    data: bytes | None = None  # the media's content when it came from a shard (``path`` then names it)

    @property
    def is_video(self) -> bool:
        return self.modality == "video"

    @property
    def media(self) -> str | bytes:
        """What the decoder reads: the bytes if the sample carries them, else the path."""
        return self.path if self.data is None else self.data


def parse_fields(obj: Any, where: str) -> tuple:
    """One parsed JSON line -> ``(modality, media, captions, label, start, end, id, extra)``, checked.

    ``media`` is the path as written and ``id`` is None when the line has none (it then defaults to
    ``media``); both the object reader and the table reader go through here, so they agree on every rule.
    """
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    has_video, has_image = "video" in obj, "image" in obj
    if has_video == has_image:
        what = "both 'video' and 'image'" if has_video else "neither 'video' nor 'image'"
        raise ManifestError(f"{where}: a sample needs exactly one of 'video' or 'image', found {what}")
    modality = "video" if has_video else "image"
    rel = obj[modality]
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"{where}: '{modality}' must be a non-empty path string, got {rel!r}")
    caption = obj.get("caption", [])
    captions = [caption] if isinstance(caption, str) else caption
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ManifestError(f"{where}: 'caption' must be a string or a list of strings, got {caption!r}")
    label = obj.get("label")
    if label is not None and not isinstance(label, str):
        raise ManifestError(f"{where}: 'label' must be a string, got {label!r}")
    times = {}
    for key in ("start", "end"):
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ManifestError(f"{where}: '{key}' must be a number of seconds, got {value!r}")
        times[key] = None if value is None else float(value)
    if times["start"] is not None and times["end"] is not None and times["end"] < times["start"]:
        raise ManifestError(f"{where}: 'end' ({times['end']}) is before 'start' ({times['start']})")
    return (
        modality,
        rel,
        [c.strip() for c in captions],
        label,
        times["start"],
        times["end"],
        str(obj["id"]) if "id" in obj else None,
        {k: v for k, v in obj.items() if k not in _KEYS},
    )


def _parse(obj: Any, where: str, base: Path) -> Sample:
    modality, rel, captions, label, start, end, id_, extra = parse_fields(obj, where)
    return Sample(str(base / rel), modality, captions, label, start, end, rel if id_ is None else id_, extra)


def read_manifest_objects(path: str | Path, root: str | Path | None = None) -> list[Sample]:
    """The same samples as :func:`~videovl.data.sources.read_manifest` as a list of Python objects, one
    per line.

    Simple and slow (about 9 s and 600 MB per million lines); the reference the table reader is tested
    against, and the baseline of ``benchmarks/bench_manifest.py``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    base = Path(root) if root is not None else path.resolve().parent
    samples = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            samples.append(_parse(obj, where, base))
    if not samples:
        raise ManifestError(f"manifest {path} holds no samples")
    return samples


def write_manifest(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows (already in manifest form, paths relative to ``path``'s folder) as JSON Lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
