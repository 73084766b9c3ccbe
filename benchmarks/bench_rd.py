"""Rate-distortion of the classical codecs (and any named neural codecs) on the lab corpus.

A thin wrapper over ``codec bench rd`` for the held-out image and audio sets and the video
clips, which prints the BD-rate tables (every codec against the anchor, measured in this
same run) and one JSON object on its last line. Skips with a clear message when ``../shared/data`` (or ``$NEURALCODEC_DATA``)
is absent.

    python benchmarks/bench_rd.py                                  # images, audio, video: classical codecs
    python benchmarks/bench_rd.py --images-codecs jpeg,webp,walloc-image-16x --audio-codecs none --video-codecs none
    python benchmarks/bench_rd.py --limit 4 --out /tmp/rd          # quick look
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuralcodec.apps.bench import run_rd
from _common import data_root  # benchmarks/_common.py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images-codecs", default="jpeg,webp,jpeg2000,avif,jxl")
    ap.add_argument("--images-anchor", default="jpeg")
    ap.add_argument("--audio-codecs", default="opus,mp3,vorbis")
    ap.add_argument("--audio-anchor", default="mp3")
    ap.add_argument("--video-codecs", default="x264,x265,svtav1")
    ap.add_argument("--video-anchor", default="x264")
    ap.add_argument("--video-seconds", type=float, default=2.0, help="first S seconds of each clip")
    ap.add_argument("--out", default="docs/results", help="writes <out>/images, <out>/audio, <out>/video")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    root = data_root()
    sets = [
        ("images", root / "images" / "eval24", args.images_codecs, args.images_anchor, None),
        ("audio", root / "audio" / "eval", args.audio_codecs, args.audio_anchor, None),
        ("video", root / "video", args.video_codecs, args.video_anchor, args.video_seconds),
    ]
    report: dict = {}
    for key, folder, codecs, anchor, seconds in sets:
        if codecs.strip().lower() == "none":
            continue
        if not folder.is_dir():
            print(f"SKIP {key}: {folder} not found (set NEURALCODEC_DATA)")
            report[key] = {"skipped": f"{folder} not found"}
            continue
        summary = run_rd(
            folder,
            [c for c in codecs.split(",") if c],
            Path(args.out) / key,
            anchor=anchor,
            jobs=args.jobs,
            limit=args.limit,
            resume=args.resume,
            max_seconds=seconds,
        )
        print(f"== {key}: {summary['files']} files, anchor {anchor}")
        print(summary["bd_markdown"])
        report[key] = {
            "files": summary["files"],
            "anchor": anchor,
            "errors": summary["errors"],
            "bd": {
                row["codec"]: {k: v for k, v in row.items() if k not in ("codec", "notes")}
                for row in summary["bd"].get("rows", [])
            },
        }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
