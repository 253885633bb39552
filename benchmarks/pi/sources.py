"""The frames the Pi check feeds the agent: the fixture video, and the same frames as model-sized PNGs.

    python -m benchmarks.pi.sources --bundle BUNDLE --frames 20 --video shapes.avi --folder frames/

The video (MJPG, benchmarks/fixture/video.py) is what a user would point the agent at, but the
x86 and aarch64 OpenCV wheels do not turn it into the same model input: they decode MJPG with
different SIMD code (measured: up to 2 levels apart in about half the values), and their
INTER_LINEAR resize differs too (x86 wheel: IPP; aarch64 wheel: Carotene/KleidiCV; up to 1 level
apart in about a quarter of the values, on identical PNG input). The folder holds the frames as
decoded here on x86, already scaled to the size the letterbox resizes them to, as PNG: both
sides then read identical pixels and skip the resize, and any difference left is the model's
arithmetic and the postprocessing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from agent.bundle import load_bundle
from agent.pipeline.letterbox import Letterbox
from benchmarks.fixture.video import write_shapes_video


def write_frames(video: Path, folder: Path, input_hw: tuple[int, int]) -> int:
    """Decode `video` into folder/frame_NNNN.png at the letterbox's resized size; return the count."""
    folder.mkdir(parents=True, exist_ok=True)
    letterbox = Letterbox(input_hw)
    capture = cv2.VideoCapture(str(video))
    count = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            size = letterbox.transform_for(image.shape[:2]).resized_wh
            cv2.imwrite(str(folder / f"frame_{count:04d}.png"), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            count += 1
    finally:
        capture.release()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle, for its input size")
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--video", type=Path, required=True, help="MJPG video to write")
    parser.add_argument("--folder", type=Path, required=True, help="folder for the scaled frames as PNG")
    args = parser.parse_args()
    write_shapes_video(args.video, frames=args.frames)
    written = write_frames(args.video, args.folder, load_bundle(args.bundle).imgsz)
    if written != args.frames:
        print(f"{args.video}: decoded {written} frames, expected {args.frames}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
