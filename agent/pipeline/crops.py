"""Detections from several views of one frame (square crops, and maybe the whole frame), as one set.

Each view's detections come back in its own pixels; they are moved onto the frame and merged: NMS
on the frame's boxes (an object in two overlapping crops is one detection), and a box that a crop's
inner edge cut short gives way to the whole box that another view saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.pipeline.detections import Detections
from agent.pipeline.nms import nms_class_aware

# A box this close to a crop's edge (share of the crop's side) was probably cut by it, unless that edge is
# the frame's: the model's box of a cut object ends a few pixels short of where the picture does.
EDGE_SHARE = 0.02
# A cut box with at least this share of its area inside a whole box of its class is a piece of that object.
PIECE_SHARE = 0.6


@dataclass(frozen=True)
class Crop:
    """A square of the frame, in pixels: left, top and side."""

    x: int
    y: int
    side: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.side, self.y + self.side)


@dataclass(frozen=True)
class RegionPlan:
    """What the detector runs on for one frame. whole: the whole frame (letterboxed), besides `crops`.
    dropped: crops left out by max_regions (their tracks are not aged by this frame)."""

    crops: tuple[Crop, ...]
    whole: bool
    dropped: int = 0

    @classmethod
    def whole_frame(cls) -> RegionPlan:
        return cls((), True)

    @property
    def runs(self) -> int:
        """Model runs this plan costs."""
        return len(self.crops) + self.whole

    def covers(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Per box ((N, 4) pixels): was its centre inside what the detector looked at."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        if self.whole:
            return np.ones(len(boxes), bool)
        looked = np.zeros(len(boxes), bool)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        for crop in self.crops:
            x1, y1, x2, y2 = crop.box
            looked |= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
        return looked


# One view's detections in its own pixels, and its preprocess, inference and postprocess ms.
DetectView = Callable[[np.ndarray], tuple[Detections, float, float, float]]


def detect_plan(
    detect: DetectView, image_bgr: np.ndarray, plan: RegionPlan, iou: float, max_detections: int
) -> tuple[Detections, float, float, float]:
    """Run `detect` on every view of the plan; the merged detections in frame pixels and the summed stage ms."""
    if plan.whole and not plan.crops:
        return detect(image_bgr)
    height, width = image_bgr.shape[:2]
    parts: list[Detections] = []
    cut: list[np.ndarray] = []
    totals = np.zeros(3)
    if plan.whole:
        found, *stages = detect(image_bgr)
        parts.append(found)
        cut.append(np.zeros(len(found), bool))
        totals += stages
    for crop in plan.crops:
        found, *stages = detect(image_bgr[crop.y : crop.y + crop.side, crop.x : crop.x + crop.side])
        totals += stages
        parts.append(_moved(found, crop))
        cut.append(_cut_by_edge(found.boxes_xyxy, crop, (height, width)))
    started = time.perf_counter()
    merged = merge_views(parts, np.concatenate(cut), iou, max_detections)
    totals[2] += (time.perf_counter() - started) * 1e3
    return merged, float(totals[0]), float(totals[1]), float(totals[2])


def merge_views(parts: list[Detections], cut: np.ndarray, iou: float, max_detections: int) -> Detections:
    """One set from the views' detections (frame pixels); cut: per detection, in order, whether a crop's inner
    edge cut it short."""
    boxes = np.concatenate([p.boxes_xyxy for p in parts]).reshape(-1, 4)
    scores = np.concatenate([p.scores for p in parts])
    class_ids = np.concatenate([p.class_ids for p in parts])
    if not len(scores):
        return Detections.empty()
    # A whole box wins over a piece of it whatever their scores: pieces are dropped before NMS.
    pieces = np.flatnonzero(cut)
    whole = np.flatnonzero(~cut)
    drop = np.zeros(len(scores), bool)
    if len(pieces) and len(whole):
        inside = _share_inside(boxes[pieces], boxes[whole])
        same = class_ids[pieces][:, None] == class_ids[whole][None, :]
        drop[pieces] = ((inside >= PIECE_SHARE) & same).any(axis=1)
    kept = np.flatnonzero(~drop)
    order = nms_class_aware(boxes[kept], scores[kept], class_ids[kept], iou, max_detections)
    chosen = kept[order]
    return Detections(boxes[chosen], scores[chosen], class_ids[chosen])


def _moved(found: Detections, crop: Crop) -> Detections:
    if not len(found):
        return found
    offset = np.array([crop.x, crop.y, crop.x, crop.y], np.float32)
    return Detections(found.boxes_xyxy + offset, found.scores, found.class_ids)


def _cut_by_edge(boxes: np.ndarray, crop: Crop, frame_hw: tuple[int, int]) -> np.ndarray:
    """Per box (crop pixels): does it touch an edge of the crop that is not an edge of the frame."""
    height, width = frame_hw
    side, edge = crop.side, max(2.0, EDGE_SHARE * crop.side)
    left = (boxes[:, 0] <= edge) & (crop.x > 0)
    top = (boxes[:, 1] <= edge) & (crop.y > 0)
    right = (boxes[:, 2] >= side - edge) & (crop.x + side < width)
    bottom = (boxes[:, 3] >= side - edge) & (crop.y + side < height)
    return left | top | right | bottom


def _share_inside(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M): share of each box of `a`'s area that lies inside each box of `b`."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    return inter / np.maximum(area[:, None], 1e-9)
