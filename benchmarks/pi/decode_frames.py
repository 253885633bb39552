"""Write the frames the agent feeds its model from a video, as this machine's OpenCV decodes and resizes them.

    python benchmarks/pi/decode_frames.py VIDEO BUNDLE FOLDER [--frames N]

Run as a script inside the emulated arm64 root (it imports only the installed agent, OpenCV and
numpy, not this repository's benchmarks package), and on x86 for the pixel comparison. The video
is opened with the agent's own file capture and each frame goes through the agent's Letterbox;
the resized part of its canvas is written as PNG (lossless). The agent run on that folder then
gives its model the very input it gave it on the video: the folder's frames already have the
resized size, so the letterbox only pads them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from agent.bundle import load_bundle
from agent.pipeline.capture import resolve, to_bgr
from agent.pipeline.letterbox import Letterbox


def decode(video: Path, bundle: Path, folder: Path, frames: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    letterbox = Letterbox(load_bundle(bundle).imgsz)
    capture = resolve(str(video)).open()
    count = 0
    try:
        while count < frames and capture.grab():
            ok, image = capture.retrieve()
            image = to_bgr(image) if ok else None
            if image is None:
                break
            canvas, transform = letterbox.canvas(image)
            (width, height), x, y = transform.resized_wh, transform.pad_x, transform.pad_y
            cv2.imwrite(str(folder / f"frame_{count:04d}.png"), canvas[y : y + height, x : x + width])
            count += 1
    finally:
        capture.release()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("bundle", type=Path, help="the bundle, for the model's input size")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--frames", type=int, default=1 << 30)
    args = parser.parse_args()
    written = decode(args.video, args.bundle, args.folder, args.frames)
    print(f"{args.video}: {written} frames into {args.folder}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
