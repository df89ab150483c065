"""Pre-scan a manifest for unreadable media before a long run.

python tools/scan_videos.py data/train.jsonl                        # writes data/train.unreadable.txt
python tools/scan_videos.py data/train.jsonl --root /videos --workers 8 --output bad.txt

Every entry is opened (metadata) and its first and last frames decoded (images: decoded whole). The
unreadable files are written one per line as ``path<TAB>error``; the counts are printed and returned.
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool
from pathlib import Path

from videovl.cli import run_tool
from videovl.data.media.video_io import BACKENDS, VideoReadError, probe, read_frames, read_image
from videovl.data.sources import Sample, read_manifest
from videovl.progress import progress


def check(item: tuple[Sample, str]) -> tuple[str, str | None]:
    """(path, None) if the sample decodes, else (path, error)."""
    sample, backend = item
    try:
        if sample.is_video:
            n = probe(sample.path, backend).num_frames
            read_frames(sample.path, [0, n - 1], backend)
        else:
            read_image(sample.path)
    except VideoReadError as e:
        return sample.path, str(e)
    return sample.path, None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="JSON Lines manifest (see videovl/data/sources/manifest.py)")
    p.add_argument("--root", help="folder relative media paths resolve against (default: the manifest's)")
    p.add_argument("--output", help="list of unreadable files (default: <manifest>.unreadable.txt beside it)")
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="decoder to check with (default: auto)"
    )
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: this process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, int]:
    args = parse_args(argv)
    samples = read_manifest(args.manifest, args.root)
    output = Path(args.output) if args.output else Path(args.manifest).with_suffix(".unreadable.txt")
    items = [(s, args.backend) for s in samples]
    bar = dict(total=len(items), desc="scanning", unit="file", disable=args.quiet)
    if args.workers > 0:
        with Pool(args.workers) as pool:
            results = list(progress(pool.imap(check, items, chunksize=4), **bar))
    else:
        results = [check(item) for item in progress(items, **bar)]
    bad = [(path, error) for path, error in results if error is not None]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        "".join(f"{path}\t{' '.join(error.split())}\n" for path, error in bad), encoding="utf-8"
    )
    counts = {"total": len(results), "readable": len(results) - len(bad), "unreadable": len(bad)}
    print(f"{counts['unreadable']} of {counts['total']} files unreadable; list written to {output}")
    return counts


if __name__ == "__main__":
    run_tool(main)
