"""Re-encode a manifest's (or a folder's) videos for pretraining: short side 224 px, 3 fps, a keyframe
every 4 frames, no B-frames (see videovl/data/media/preprocess.py).

python tools/preprocess_videos.py data/train.jsonl --out /fast/train_224 --workers 8
python tools/preprocess_videos.py --folder /videos --out /fast/videos_224 --fps 2 --short-side 256

Writes the videos under --out (same relative paths, .mp4), and a new manifest (default: --out/<name>, or
--out/videos.jsonl for a folder) whose lines keep every field, with ``video`` pointing at the new files;
``start``/``end`` stay valid (times are preserved). Run it again to resume: finished files are skipped.
Unreadable inputs are left out of the new manifest and listed in <new manifest>.unreadable.txt. Input files
are never written.
"""

from __future__ import annotations

import argparse

from videovl.cli import run_tool
from videovl.data.media.preprocess import EncodeSettings, preprocess_folder, preprocess_manifest
from videovl.progress import progress


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", nargs="?", help="JSON Lines manifest (or give --folder)")
    p.add_argument("--folder", help="a folder of videos (recursive) instead of a manifest")
    p.add_argument("--out", required=True, help="output folder (must not hold the inputs)")
    p.add_argument("--root", help="folder the manifest's relative paths resolve against (default: its own)")
    p.add_argument("--out-manifest", help="path of the new manifest (default: in --out)")
    defaults = EncodeSettings()
    p.add_argument("--short-side", type=int, default=defaults.short_side, help="pixels (default 224)")
    p.add_argument("--fps", type=float, default=defaults.fps, help="frames per second (default 3)")
    p.add_argument(
        "--keyframe-interval", type=int, default=defaults.keyframe_interval, help="frames (default 4)"
    )
    p.add_argument("--crf", type=int, default=defaults.crf, help="libx264 quality, lower is better (23)")
    p.add_argument("--preset", default=defaults.preset, help="libx264 speed preset (default veryfast)")
    p.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if (args.manifest is None) == (args.folder is None):
        p.error("give a manifest or --folder (one of them)")
    return args


def main(argv=None) -> dict[str, int]:
    args = parse_args(argv)
    settings = EncodeSettings(args.short_side, args.fps, args.keyframe_interval, args.crf, args.preset)

    def bar(it, total):
        return progress(it, total=total, desc="encoding", unit="video", disable=args.quiet)

    common = dict(out_manifest=args.out_manifest, settings=settings, workers=args.workers, progress=bar)
    if args.folder:
        report = preprocess_folder(args.folder, args.out, **common)
    else:
        report = preprocess_manifest(args.manifest, args.out, root=args.root, **common)
    print(report.summary())
    return {
        "encoded": report.encoded,
        "skipped": report.skipped,
        "unreadable": len(report.unreadable or []),
        "lines": report.lines,
    }


if __name__ == "__main__":
    run_tool(main)
