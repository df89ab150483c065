"""Write a manifest's samples as WebDataset shards (the video2dataset / img2dataset layout).

python tools/make_shards.py demo:video_train.jsonl shards/demo_video --samples-per-shard 16
python tools/make_shards.py data/train.jsonl /data/shards/train --max-bytes 1e9 --shuffle

Each sample becomes ``KEY.mp4`` (the media file's bytes, its own extension), ``KEY.txt`` (the first caption)
and ``KEY.json`` (every caption, the label, start/end, id, the source path and any other manifest field),
keys numbering the samples from 000000000. A shard closes at ``--samples-per-shard`` samples or before its
file would pass ``--max-bytes``, counted as the tar is written (each member's 512-byte header and its data
padded to 512 bytes, the end blocks, the archive padded to 10240-byte records): only a shard of one sample
larger than the limit passes it. Beside each ``NNNNN.tar`` goes ``NNNNN_stats.json`` (its sample count, which
training reads instead of scanning the tar, and the samples that were left out); ``stats.json`` sums them.

Resumable: a shard's tar is renamed into place and its stats file written only when it is complete, so a
rerun with the same arguments keeps the shards that have stats and continues after the last of them.
Unreadable media (missing or empty files) are left out and listed, never fatal. ``demo:NAME`` is a manifest
of the built-in demo corpus (generated under ``--demo-root`` first if needed).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from videovl.cli import run_tool
from videovl.data.sources import ManifestError, Sample, read_manifest

__all__ = ["main", "sample_members", "shard_name", "member_bytes", "tar_bytes"]


def shard_name(number: int) -> str:
    return f"{number:05d}"


BLOCK = 512  # a tar member's header, and the unit its data is padded to
RECORD = 20 * BLOCK  # tarfile pads a finished archive to whole records of 20 blocks (tar's default)


def member_bytes(size: int) -> int:
    """What a member of ``size`` data bytes takes in the tar: a ustar header and the data padded."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def tar_bytes(members: int) -> int:
    """The size of a tar file whose members take ``members`` bytes: two zero blocks end it, and the whole
    is padded to records."""
    return -(-(members + 2 * BLOCK) // RECORD) * RECORD


def _media_ext(sample: Sample) -> str:
    return Path(sample.path).suffix.lower().lstrip(".") or ("mp4" if sample.is_video else "jpg")


def _text_members(sample: Sample, key: str) -> dict[str, bytes]:
    """``json`` (every caption, the label, start/end, id, source path and other fields) and ``txt``."""
    meta: dict[str, Any] = dict(sample.extra)
    meta.update(key=key, id=sample.id, source=sample.path, caption=sample.captions)
    for name in ("label", "start", "end"):
        if getattr(sample, name) is not None:
            meta[name] = getattr(sample, name)
    members = {"json": json.dumps(meta).encode()}
    if sample.captions:
        members["txt"] = sample.captions[0].encode("utf-8")
    return members


def sample_members(sample: Sample, key: str) -> dict[str, Any]:
    """The tar members of one sample (webdataset's dict form: extension -> bytes)."""
    return {"__key__": key, _media_ext(sample): Path(sample.path).read_bytes(), **_text_members(sample, key)}


def _sample_bytes(sample: Sample, key: str, media_size: int) -> int:
    """What ``sample`` adds to a shard: every member's header and padded data, the text members included."""
    text = _text_members(sample, key)
    return member_bytes(media_size) + sum(member_bytes(len(v)) for v in text.values())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="JSON Lines manifest, or demo:NAME (e.g. demo:video_train.jsonl)")
    p.add_argument("output", help="folder for NNNNN.tar, NNNNN_stats.json and stats.json")
    p.add_argument("--root", help="folder relative media paths resolve against (default: the manifest's)")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="at most this many samples a shard")
    p.add_argument(
        "--max-bytes",
        type=float,
        default=1e9,
        help="at most this many bytes a shard file (tar headers and padding counted); a single sample "
        "larger than this gets a shard of its own",
    )
    p.add_argument("--shuffle", action="store_true", help="write the samples in a random order (--seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--demo-root", default="data/moving_digits", help="where demo:NAME is generated")
    return p.parse_args(argv)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: getattr(args, k) for k in ("manifest", "root", "samples_per_shard", "max_bytes", "shuffle", "seed")
    }


def _load(args: argparse.Namespace) -> list[Sample]:
    spec = args.manifest
    if spec.startswith("demo:"):
        from videovl.data.corpora.demo import generate_demo

        generate_demo(args.demo_root)
        spec = str(Path(args.demo_root) / spec[5:])
    samples = read_manifest(spec, args.root)
    if args.shuffle:
        order = np.random.default_rng(args.seed).permutation(len(samples))
        samples = [samples[i] for i in order]
    return samples


def _done_shards(out: Path, options: dict[str, Any]) -> tuple[int, int, list[dict]]:
    """(next shard number, next sample row, stats of the complete shards) from an earlier run."""
    number, row, done = 0, 0, []
    while (stats := out / f"{shard_name(number)}_stats.json").is_file():
        info = json.loads(stats.read_text(encoding="utf-8"))
        if info.get("options") != options:
            raise ManifestError(
                f"{stats} was written with other options ({info.get('options')}); "
                f"write to a new folder or delete {out}"
            )
        number, row = number + 1, info["end_row"]
        done.append(info)
    return number, row, done


def _write_shard(
    out: Path, number: int, rows: list[tuple[int, Sample]], options: dict, skipped: list[str]
) -> dict[str, Any]:
    name = shard_name(number)
    tmp, final = out / f"{name}.tar.tmp", out / f"{name}.tar"
    count, failures = 0, list(skipped)
    mtime = int(time.time())
    # tarfile itself, in the ustar format: every header is one block, so the size counted in ``main``
    # is the size written (webdataset's TarWriter adds a pax header to each member for its float mtime).
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for row, sample in rows:
            try:
                members = sample_members(sample, f"{row:09d}")
            except OSError as e:  # vanished or unreadable since it was sized
                failures.append(f"{sample.path}\t{type(e).__name__}: {e}")
                continue
            key = members.pop("__key__")
            for ext in sorted(members):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(members[ext]), mtime, 0o444
                tar.addfile(info, io.BytesIO(members[ext]))
            count += 1
    tmp.replace(final)
    info = {
        "count": count,
        "successes": count,
        "failed": len(failures),
        "failures": failures,
        "bytes": final.stat().st_size,
        "first_row": rows[0][0] if rows else 0,
        "end_row": rows[-1][0] + 1 if rows else 0,
        "options": options,
    }
    stats = out / f"{name}_stats.json"
    stats.with_suffix(".tmp").write_text(json.dumps(info, indent=1))
    stats.with_suffix(".tmp").replace(stats)  # last: its presence marks the shard complete
    return info


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.samples_per_shard < 1 or args.max_bytes <= 0:
        raise SystemExit("--samples-per-shard must be >= 1 and --max-bytes > 0")
    start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    options = _options(args)
    samples = _load(args)
    number, row, done = _done_shards(out, options)
    resumed = number
    skipped: list[str] = []
    pending: list[tuple[int, Sample]] = []
    size = 0
    for i in range(row, len(samples)):
        sample = samples[i]
        path = Path(sample.path)
        nbytes = path.stat().st_size if path.is_file() else 0
        if nbytes == 0:
            skipped.append(f"{sample.path}\t{'empty' if path.is_file() else 'missing'}")
            continue
        nbytes = _sample_bytes(sample, f"{i:09d}", nbytes)
        if pending and (len(pending) >= args.samples_per_shard or tar_bytes(size + nbytes) > args.max_bytes):
            done.append(_write_shard(out, number, pending, options, skipped))
            number, pending, size, skipped = number + 1, [], 0, []
        pending.append((i, sample))
        size += nbytes
    if pending:
        done.append(_write_shard(out, number, pending, options, skipped))
        number, skipped = number + 1, []
    failures = [f for info in done for f in info["failures"]] + skipped
    total = {
        "shards": number,
        "samples": sum(info["count"] for info in done),
        "failed": len(failures),
        "bytes": sum(info["bytes"] for info in done),
        "resumed_after_shards": resumed,
        "seconds": round(time.perf_counter() - start, 3),
        "pattern": str(out / f"{{{shard_name(0)}..{shard_name(max(number - 1, 0))}}}.tar"),
        "failures": failures,
    }
    (out / "stats.json").write_text(json.dumps(total, indent=1))
    print(
        f"{total['samples']} samples in {number} shards ({total['bytes'] / 1e6:.1f} MB), "
        f'{len(failures)} left out; use shards: "{total["pattern"]}"'
    )
    return total


if __name__ == "__main__":
    run_tool(main)
