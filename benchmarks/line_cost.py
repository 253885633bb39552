"""What the line and dwell stages cost per detector frame: LineCounter.update and ZoneOccupancy.update (which
keeps each object's dwell) with longest_dwell (the retained `zones` message's figure), at N tracked objects.

N boxes bounce around a 640x480 frame, many of them crossing the one line and standing in the one zone
(the lower half), so both stages do their whole work; one call each per frame, timed with perf_counter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from agent.config.lines import LineConfig, LinesConfig
from agent.config.zones import ZoneConfig
from agent.scene.lines import LineCounter, LineCounts
from agent.scene.zones import ZoneOccupancy

FRAME_HW = (480, 640)
WARMUP = 5
LINES, ZONES = "lines", "zones + dwell"
STAGES = (LINES, ZONES)


def boxes_per_frame(objects: int, frames: int, seed: int = 3) -> list[np.ndarray]:
    """(objects, 4) xyxy pixels per frame: boxes of 30..80 px bouncing off the frame's edges."""
    rng = np.random.default_rng([seed, objects])
    h, w = FRAME_HW
    size = rng.uniform(30, 80, size=(objects, 2))
    centre = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(objects, 2))
    velocity = rng.uniform(-8, 8, size=(objects, 2))
    out = []
    for _ in range(frames):
        centre += velocity
        bounce = (centre < size / 2) | (centre > np.array([w, h]) - size / 2)
        velocity[bounce] *= -1
        out.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32))
    return out


def time_round(objects: int, frames: int) -> dict[str, float]:
    """Median ms per frame of each stage over one round of `frames` frames, fresh state, after a warm-up."""
    lines = LineCounter(LinesConfig((LineConfig("gate", ((0.1, 0.5), (0.9, 0.5))),), "never"), LineCounts(0.0))
    zones = ZoneOccupancy([ZoneConfig("lower", ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)))])
    ids = [f"object-{i}" for i in range(objects)]
    labels = ["person"] * objects
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for frame, boxes in enumerate(boxes_per_frame(objects, frames + WARMUP)):
        ts = 1_000.0 + frame / 15
        started = time.perf_counter()
        lines.update(ids, labels, boxes, FRAME_HW, ts, frame)
        between = time.perf_counter()
        zones.update(ids, labels, boxes, FRAME_HW, ts)
        zones.longest_dwell()
        ended = time.perf_counter()
        if frame >= WARMUP:
            times[LINES].append(between - started)
            times[ZONES].append(ended - between)
    return {stage: float(np.median(values) * 1e3) for stage, values in times.items()}


def stage_costs(objects: Sequence[int], frames: int, rounds: int) -> dict[int, dict[str, list[float]]]:
    """objects -> stage -> per-round median ms per frame."""
    out: dict[int, dict[str, list[float]]] = {}
    for count in objects:
        out[count] = {stage: [] for stage in STAGES}
        for _ in range(rounds):
            for stage, ms in time_round(count, frames).items():
                out[count][stage].append(ms)
    return out
