"""`yolo-edge-agent bench`: per-stage latency of each precision in a bundle, on this board."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

import numpy as np

from agent.bundle import load_bundle
from agent.config import AgentConfig
from agent.pipeline.capture import SourceError
from agent.pipeline.detector import Detector, load_detector
from agent.pipeline.inference import TIMING_BLOCK_RUNS
from agent.pipeline.sources import open_source

WARMUP_FRAMES = 3


def _frames(uri: str | None, count: int) -> tuple[list[np.ndarray], str]:
    """Up to `count` frames from a file or folder source, or grey noise frames when none is given."""
    if uri is None:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        return [np.roll(base, i * 8, axis=1) for i in range(count)], "synthetic 640x480 frames"
    frames = []
    with open_source(uri) as source:
        while len(frames) < count and not source.ended:
            frame = source.read(timeout=5.0)
            if frame is not None:
                frames.append(frame.image)
    if not frames:
        raise SourceError(f"{source.name} gave no frames")
    # Cycle short sources so every precision sees the same number of frames. The name, not the uri: it is printed.
    return list(itertools.islice(itertools.cycle(frames), count)), source.name


def timed_in_turns(detectors: Mapping[str, Detector], frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per detector, one row per frame: (preprocess, inference, postprocess, wall) ms.

    The detectors take turns in blocks of TIMING_BLOCK_RUNS frames, each block opening with an untimed
    run, as the converter and `--precision auto` time them: run back to back, the second precision
    would pay for the first one's thread pool still spinning, and drift in the machine's load
    would fall on one precision alone.
    """
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in detectors}
    for start in range(0, len(frames), TIMING_BLOCK_RUNS):
        block = frames[start : start + TIMING_BLOCK_RUNS]
        for name, detector in detectors.items():
            detector.detect(block[0])
            for image in block:
                began = time.perf_counter()
                _, pre, inf, post = detector.detect(image)
                rows[name].append((pre, inf, post, (time.perf_counter() - began) * 1e3))
    return {name: np.array(values) for name, values in rows.items()}


def command_bench(config: AgentConfig, count: int, uri: str | None) -> int:
    path = config.model.path
    precisions = [p for p in ("fp32", "int8") if p in load_bundle(path).files] if path.is_dir() else ["auto"]
    frames, described = _frames(uri, count)
    threads = config.model.threads or 0
    print(f"bench: {path}, {len(frames)} frames from {described}, threads={threads or 'all cores'}")
    detectors: dict[str, Detector] = {}
    for precision in precisions:
        detector, _ = load_detector(path, precision, threads, confidence=config.model.confidence, iou=config.model.iou)
        for image in frames[:WARMUP_FRAMES]:
            detector.detect(image)
        detectors[detector.identity.precision] = detector
    header = f"{'precision':<10}{'preprocess':>12}{'inference':>12}{'postprocess':>13}{'total':>10}{'fps':>8}"
    print(header + "\n" + "-" * len(header) + "   (median ms per frame; precisions take turns in blocks)")
    fps_by_precision = {}
    for precision, rows in timed_in_turns(detectors, frames).items():
        pre, inf, post = np.median(rows[:, :3], axis=0)
        fps = len(rows) / (rows[:, 3].sum() / 1e3)
        fps_by_precision[precision] = fps
        total = pre + inf + post
        print(f"{precision:<10}{pre:>12.2f}{inf:>12.2f}{post:>13.2f}{total:>10.2f}{fps:>8.1f}")
    if {"int8", "fp32"} <= fps_by_precision.keys():
        print(f"INT8 / FP32 throughput: {fps_by_precision['int8'] / fps_by_precision['fp32']:.2f}x")
    return 0
