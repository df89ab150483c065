"""Re-encoding videos for pretraining: small, at a low frame rate, with frequent keyframes.

Pretraining samples a few frames per clip (8 of a 10 s clip); decoding a 720p 25 fps original to get them
costs far more than the model's step. Re-encoded once to a short side of 224 px at 3 fps (CLIP4Clip's
choice; VindLU uses 2 fps) with a keyframe every few frames and no B-frames, a sparse read decodes a few
small frames after a nearby keyframe.

- Frame rate: output frame ``j`` is the last input frame shown at or before ``j / fps`` seconds (counted
  from the first frame), so a time in the input is the same time in the output, and manifest clip windows
  (``start``/``end``, seconds) stay valid: they are kept as they are. Inputs at or below ``fps`` keep every
  frame (their own rate).
- Size: the short side is scaled to ``short_side`` (area filter), the other side keeps the aspect ratio,
  both rounded to even numbers (yuv420p); smaller inputs keep their size (never upscaled).
- Audio and subtitles are dropped: the models see frames and text.
- Outputs are written under a temporary name and renamed when complete, so an output file that exists is
  finished: a run stopped and started again skips it. Inputs are only read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from videovl.config import ConfigError
from videovl.data.sources import ManifestError, parse_fields

__all__ = [
    "VIDEO_SUFFIXES",
    "EncodeSettings",
    "PreprocessReport",
    "encode_video",
    "output_name",
    "preprocess_manifest",
    "preprocess_folder",
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp")


@dataclass(frozen=True)
class EncodeSettings:
    """How outputs are encoded. ``keyframe_interval`` is in output frames (4 at 3 fps: one every 1.3 s);
    ``crf``/``preset`` are libx264's quality and speed knobs; ``threads`` per encoding process."""

    short_side: int = 224
    fps: float = 3.0
    keyframe_interval: int = 4
    crf: int = 23
    preset: str = "veryfast"
    threads: int = 1

    def check(self) -> None:
        for name in ("short_side", "fps", "keyframe_interval", "threads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be in 0..51 (libx264), got {self.crf}")


@dataclass
class PreprocessReport:
    """Counts of one run, the unreadable inputs with their errors, and where the outputs went."""

    encoded: int = 0
    skipped: int = 0  # already done by an earlier run
    unreadable: list[tuple[str, str]] | None = None
    manifest: str | None = None
    unreadable_list: str | None = None
    lines: int = 0  # lines of the new manifest

    def summary(self) -> str:
        bad = len(self.unreadable or [])
        return (
            f"{self.encoded} encoded, {self.skipped} already done, {bad} unreadable (left out); "
            f"{self.lines} lines in {self.manifest}"
            + (f"; unreadable list: {self.unreadable_list}" if bad else "")
        )


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    short = min(width, height)
    scale = min(1.0, short_side / short)
    return _even(width * scale), _even(height * scale)


def encode_video(src: str | Path, dst: str | Path, settings: EncodeSettings) -> dict[str, Any]:
    """Re-encode ``src`` into ``dst`` (mp4, h264, see the module docstring); written under a temporary name
    and renamed. Returns the output's frames, size and rate. Raises on an unreadable input (nothing left)."""
    import av
    from av.video.frame import PictureType

    dst = Path(dst)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.mp4")
    try:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                raise ValueError("no video stream")
            stream = inp.streams.video[0]
            stream.codec_context.thread_count = settings.threads
            in_rate = stream.average_rate or stream.guessed_rate
            rate = Fraction(settings.fps).limit_denominator(1001)
            if in_rate and in_rate <= rate:
                rate = Fraction(in_rate)
            width, height = _output_size(
                stream.codec_context.width, stream.codec_context.height, settings.short_side
            )
            dst.parent.mkdir(parents=True, exist_ok=True)
            frames = 0
            with av.open(str(tmp), "w", format="mp4") as out:
                enc = out.add_stream("libx264", rate=rate)
                enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
                # Keyframes are forced below, every interval exactly; x264's own placement is switched off
                # (no scene-cut keyframes, a maximum interval it never reaches).
                enc.codec_context.gop_size = 1 << 16
                enc.codec_context.thread_count = settings.threads
                enc.options = {
                    "crf": str(settings.crf),
                    "preset": settings.preset,
                    "sc_threshold": "0",
                    "bf": "0",  # no B-frames: a frame needs only the ones before it
                    "forced-idr": "1",  # a forced keyframe is an IDR frame: decoding can start there
                }
                for image in _resampled(inp.decode(stream), rate):
                    image = image.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                    image.pts, image.time_base = frames, 1 / rate
                    # Decoded frames carry their input picture type, and an input keyframe would force one
                    # here too: every frame's type is set.
                    keyframe = frames % settings.keyframe_interval == 0
                    image.pict_type = PictureType.I if keyframe else PictureType.NONE
                    for packet in enc.encode(image):
                        out.mux(packet)
                    frames += 1
                for packet in enc.encode():
                    out.mux(packet)
            if frames == 0:
                raise ValueError("no frame could be decoded")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return {"frames": frames, "width": width, "height": height, "fps": float(rate)}


def _resampled(frames: Iterator, rate: Fraction) -> Iterator:
    """The frames shown at output times 0, 1/rate, 2/rate... (seconds from the first frame): for each, the
    last input frame at or before it. A gap in the input repeats the frame before it, so times hold."""
    step, j = 1 / rate, 0  # j: the next output frame
    first = previous = previous_t = None
    for frame in frames:
        if frame.time is None:  # no timestamps at all (rare): every frame, in order
            yield frame
            continue
        if first is None:
            first = frame.time
        t = Fraction(frame.time - first).limit_denominator(1_000_000)
        while previous is not None and j * step < t:  # output time j lies in [previous_t, t)
            yield previous
            j += 1
        previous, previous_t = frame, t
    while previous is not None and j * step <= previous_t:  # the last frame covers the times up to its own
        yield previous
        j += 1


def output_name(media: str) -> str:
    """Where an input path (as written in a manifest, or relative to a folder) goes under the output folder:
    the same relative path with ``.mp4``; absolute paths and paths leaving their folder get a short hash of
    the path in front of their file name (two inputs never share an output)."""
    path = Path(media)
    if path.is_absolute() or ".." in path.parts:
        digest = hashlib.sha1(media.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return f"_outside/{digest}-{path.stem}.mp4"
    return path.with_suffix(".mp4").as_posix()


def _job(args: tuple[str, str, EncodeSettings]) -> tuple[str, str | None]:
    import av.error

    src, dst, settings = args
    try:
        encode_video(src, dst, settings)
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError, EOFError) as e:
        where = Path(str(e.filename)) if isinstance(e, OSError) and e.filename else None
        if where is not None and (where.parent == Path(dst).parent or where in Path(dst).parents):
            raise  # the output cannot be written (permissions, disk full): not the input's fault
        return src, f"{type(e).__name__}: {' '.join(str(e).split())}"
    return src, None


def _run(
    jobs: list[tuple[str, str]], settings: EncodeSettings, workers: int, progress
) -> tuple[int, int, dict]:
    """Encode the jobs whose output is not there yet; returns (encoded, skipped, {src: error})."""
    todo = [(src, dst, settings) for src, dst in jobs if not Path(dst).is_file()]
    skipped = len(jobs) - len(todo)
    errors: dict[str, str] = {}
    if workers > 1 and len(todo) > 1:
        with get_context("spawn").Pool(workers) as pool:  # spawn: no state forked into the encoders
            results = pool.imap_unordered(_job, todo, chunksize=1)
            for src, error in progress(results, total=len(todo)):
                if error:
                    errors[src] = error
    else:
        for src, error in progress(map(_job, todo), total=len(todo)):
            if error:
                errors[src] = error
    return len(todo) - len(errors), skipped, errors


def _no_progress(it, total=None):
    return it


def _check_output(out_dir: Path, inputs: list[Path]) -> None:
    out_dir = out_dir.resolve()
    for folder in {Path(p).resolve() for p in {os.path.dirname(os.path.abspath(p)) for p in inputs}}:
        if folder == out_dir or out_dir in folder.parents:
            raise ConfigError(
                f"output folder {out_dir} holds the inputs ({folder}); choose a separate folder, so inputs "
                "are never overwritten"
            )


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def _write_unreadable(path: Path, errors: dict[str, str]) -> str | None:
    if not errors:
        path.unlink(missing_ok=True)
        return None
    _write_lines(path, [f"{src}\t{err}\n" for src, err in sorted(errors.items())])
    return str(path)


def preprocess_manifest(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    out_manifest: str | Path | None = None,
    settings: EncodeSettings = EncodeSettings(),
    workers: int = 1,
    progress=_no_progress,
) -> PreprocessReport:
    """Re-encode every video of ``manifest`` into ``out_dir`` and write a manifest of the results.

    The new manifest (default ``out_dir/<name>``) keeps each line's keys and values, with ``video`` pointing
    at the new file (relative to the new manifest) and ``image`` paths rebased so they still resolve; lines
    whose video is unreadable are left out and listed in ``<new manifest>.unreadable.txt``. A video named by
    several lines is encoded once. ``start``/``end`` are kept: times are preserved (module docstring).
    """
    settings.check()
    manifest, out_dir = Path(manifest), Path(out_dir)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist")
    base = Path(root) if root is not None else manifest.resolve().parent
    out_manifest = Path(out_manifest) if out_manifest is not None else out_dir / manifest.name
    if out_manifest.resolve() == manifest.resolve():
        raise ConfigError(f"the new manifest would overwrite the input {manifest}; choose another path")
    rows: list[tuple[dict[str, Any], str]] = []  # (line object, its media key)
    jobs: dict[str, str] = {}  # input path -> output path
    with manifest.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{manifest}:{number}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            modality, media = parse_fields(obj, where)[:2]
            src = str(base / media)
            if modality == "video":
                jobs.setdefault(src, str(out_dir / output_name(media)))
            rows.append((obj, src))
    if not rows:
        raise ManifestError(f"manifest {manifest} holds no samples")
    _check_output(out_dir, [Path(p) for p in jobs])
    encoded, skipped, errors = _run(list(jobs.items()), settings, workers, progress)
    folder = out_manifest.resolve().parent
    lines = []
    for obj, src in rows:
        if src in errors:
            continue
        key = "video" if "video" in obj else "image"
        target = jobs[src] if key == "video" else src
        lines.append(
            json.dumps(obj | {key: os.path.relpath(Path(target).resolve(), folder)}, ensure_ascii=False)
            + "\n"
        )
    _write_lines(out_manifest, lines)
    unreadable = _write_unreadable(out_manifest.with_name(out_manifest.name + ".unreadable.txt"), errors)
    return PreprocessReport(
        encoded, skipped, sorted(errors.items()), str(out_manifest), unreadable, len(lines)
    )


def preprocess_folder(
    folder: str | Path,
    out_dir: str | Path,
    *,
    out_manifest: str | Path | None = None,
    settings: EncodeSettings = EncodeSettings(),
    workers: int = 1,
    progress=_no_progress,
) -> PreprocessReport:
    """Re-encode every video file under ``folder`` (recursively, by suffix) into the same relative paths
    under ``out_dir``, and write a manifest of them (default ``out_dir/videos.jsonl``; ``id``: the input's
    path relative to ``folder``)."""
    settings.check()
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    _check_output(out_dir, [folder / "x"])
    out = out_dir.resolve()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and out not in p.resolve().parents
    )
    if not files:
        raise FileNotFoundError(f"{folder} holds no video files ({' '.join(VIDEO_SUFFIXES)})")
    _check_output(out_dir, files)
    out_manifest = Path(out_manifest) if out_manifest is not None else out_dir / "videos.jsonl"
    names = {str(p): p.relative_to(folder).as_posix() for p in files}
    jobs = {src: str(out_dir / output_name(rel)) for src, rel in names.items()}
    encoded, skipped, errors = _run(list(jobs.items()), settings, workers, progress)
    where = out_manifest.resolve().parent
    lines = [
        json.dumps(
            {"video": os.path.relpath(Path(dst).resolve(), where), "id": names[src]}, ensure_ascii=False
        )
        + "\n"
        for src, dst in jobs.items()
        if src not in errors
    ]
    _write_lines(out_manifest, lines)
    unreadable = _write_unreadable(out_manifest.with_name(out_manifest.name + ".unreadable.txt"), errors)
    return PreprocessReport(
        encoded, skipped, sorted(errors.items()), str(out_manifest), unreadable, len(lines)
    )
