"""Where the detector looks on a frame with motion: square crops at the frame's own resolution.

A 1920x1080 frame letterboxed into a 640 model is shrunk three times, and a person 100 px tall becomes
33 px, under what most models find. A 640x640 crop around where something moved keeps every pixel.
The crops come from the motion boxes and the tracked objects' predicted boxes: each grown by a margin,
nearby ones merged while the merged crop stays about as sharp, each at least the model's input (where
the frame is larger) and scaled down only when what it holds is larger. The whole frame is detected
instead when motion covers most of it, or a crop would need more than the frame's short side.
Each crop costs one model run, so at most `max_regions` run, the largest motion first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.pipeline.crops import Crop, RegionPlan

# Each side of a box grows by this share of its larger side: the model sees the object with some
# background around it, as in training, and a moving object is still inside on the next frame.
MARGIN = 0.25
# Two crops merge into one when the merged crop is at most this much larger than the larger of them
# (one model run instead of two, at a small loss of sharpness).
MERGE_GROWTH = 1.2
# Motion boxes covering this share of the frame mean a scene-wide change: the whole frame is detected.
WHOLE_FRAME_SHARE = 0.5
# Of many small motion boxes (leaves, rain) only the largest are planned for.
MAX_CANDIDATES = 64


@dataclass(frozen=True)
class _Cluster:
    box: tuple[float, float, float, float]
    motion: float  # moving area inside it, pixels: the larger runs first


def plan_regions(
    motion_boxes: np.ndarray,
    track_boxes: np.ndarray,
    frame_hw: tuple[int, int],
    input_side: int,
    max_regions: int,
    whole: bool = False,
) -> RegionPlan:
    """Crops for one frame. motion_boxes: (K, 4) xyxy, 0..1 of the frame; track_boxes: (M, 4) xyxy pixels
    (predicted boxes of tracked objects); input_side: the model's square input, pixels. whole: the whole
    frame runs anyway (a refresh): the crops then only add what it sees too small, the tracked objects."""
    height, width = frame_hw
    short = min(height, width)
    if max(height, width) <= input_side:
        return RegionPlan.whole_frame()  # the frame fits the model as it is: a crop would be no sharper
    motion = np.asarray(motion_boxes, np.float64).reshape(-1, 4)
    if not whole and float(_areas(motion).sum()) >= WHOLE_FRAME_SHARE:
        return RegionPlan.whole_frame()
    if len(motion) > MAX_CANDIDATES:
        motion = motion[np.argsort(-_areas(motion), kind="stable")[:MAX_CANDIDATES]]
    pixels = motion * np.array([width, height, width, height])
    clusters = [_Cluster(_tuple(box), float(_areas(box[None])[0])) for box in pixels]
    clusters += [_Cluster(_tuple(box), 0.0) for box in np.asarray(track_boxes, np.float64).reshape(-1, 4)]
    if whole:
        clusters = [c for c in clusters if c.motion == 0.0]  # the whole frame looks at the motion already
    clusters = _merged(clusters, input_side)
    if any(_side(c.box, input_side) > short for c in clusters):
        # Something larger than the frame's short side moves: the whole frame shrinks it least.
        return RegionPlan.whole_frame()
    clusters.sort(key=lambda c: -c.motion)
    crops = tuple(_crop(c.box, input_side, frame_hw) for c in clusters[:max_regions])
    return RegionPlan(crops, whole, dropped=max(0, len(clusters) - max_regions))


def _merged(clusters: list[_Cluster], input_side: int) -> list[_Cluster]:
    """Merge pairs while one crop holding both is at most MERGE_GROWTH times the larger of the two."""
    merged = True
    while merged:
        merged = False
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                a, b = clusters[i], clusters[j]
                union = _union(a.box, b.box)
                larger = max(_side(a.box, input_side), _side(b.box, input_side))
                if _side(union, input_side) <= larger * MERGE_GROWTH:
                    clusters[i] = _Cluster(union, a.motion + b.motion)
                    del clusters[j]
                    merged = True
                    break
            if merged:
                break
    return clusters


def _side(box: tuple[float, float, float, float], input_side: int) -> int:
    """The crop side for a box: its larger side plus the margins, at least the model's input."""
    larger = max(box[2] - box[0], box[3] - box[1])
    return max(input_side, int(np.ceil(larger * (1 + 2 * MARGIN))))


def _crop(box: tuple[float, float, float, float], input_side: int, frame_hw: tuple[int, int]) -> Crop:
    """The square of `_side` centred on the box, moved inside the frame."""
    height, width = frame_hw
    side = min(_side(box, input_side), height, width)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x = round(min(max(cx - side / 2, 0), width - side))
    y = round(min(max(cy - side / 2, 0), height - side))
    return Crop(x, y, side)


def _union(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _tuple(box: np.ndarray) -> tuple[float, float, float, float]:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
