"""What decoding one frame of the motion benchmark's video costs: the floor under a skipped frame.

    python -m benchmarks.decode_cost [--video PATH] [--frames 300] [--fps 10]

The motion gate skips the detector, not the decoder: every frame of a 640x480 MJPG video is decoded to
BGR before the gate can look at it. This times, in CPU milliseconds per frame of this process, cv2's
VideoCapture.read() back to back and paced at the video's fps (as the agent plays it: caches go cold
between frames), and the same JPEG packets decoded by cv2.imdecode in full colour and as a quarter-size
grayscale (IMREAD_REDUCED_GRAYSCALE_4, what a motion-only decode could use).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from benchmarks.fixture.still_video import plan_scene, write_still_video
from benchmarks.tables import Table, progress, render_text


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_frame_ms(step: Callable[[], bool], frames: int, period_s: float) -> float:
    """CPU ms per successful step; with period_s > 0 the steps are spaced like a paced source's."""
    started, done = cpu_s(), 0
    while done < frames and step():
        done += 1
        if period_s:
            time.sleep(period_s)
    if not done:
        raise RuntimeError("no frame decoded")
    return (cpu_s() - started) * 1e3 / done


def reader(video: Path) -> Callable[[], bool]:
    cap = cv2.VideoCapture(str(video))
    return lambda: cap.read()[0]


def packet_decoder(video: Path, flag: int) -> Callable[[], bool]:
    """cv2.imdecode of the raw packets (CAP_PROP_FORMAT -1: the demuxer hands over the JPEG bytes)."""
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_FORMAT, -1)

    def step() -> bool:
        ok, packet = cap.read()
        return bool(ok) and cv2.imdecode(packet, flag) is not None

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="an MJPG video (default: the motion benchmark's, generated)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="decode-cost-") as scratch:
        video = args.video
        if video is None:
            video = Path(scratch) / "still.avi"
            progress(f"writing a {args.frames / args.fps:g} s still-scene video")
            write_still_video(video, plan_scene(seconds=args.frames / args.fps, fps=args.fps))
        if not video.exists():
            print(f"error: no video at {video}; pass an MJPG file with --video", file=sys.stderr)
            return 2
        period = 1.0 / args.fps
        cases = [
            ("VideoCapture.read, back to back", reader(video), 0.0),
            (f"VideoCapture.read, paced at {args.fps:g} fps", reader(video), period),
            (f"imdecode colour, paced at {args.fps:g} fps", packet_decoder(video, cv2.IMREAD_COLOR), period),
            (
                f"imdecode quarter-size gray, paced at {args.fps:g} fps",
                packet_decoder(video, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                period,
            ),
        ]
        rows = []
        for name, step, spacing in cases:
            progress(f"{name}: {args.frames} frames")
            rows.append((name, f"{per_frame_ms(step, args.frames, spacing):.2f}"))
    print(render_text(Table(f"Decode CPU per frame of {video.name}", ("how", "CPU ms per frame"), tuple(rows))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
