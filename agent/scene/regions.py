"""Where the detector looks on a frame with motion: square crops at the frame's own resolution.

A 1920x1080 frame letterboxed into a 640 model is shrunk three times, and a person 100 px tall becomes
33 px, under what most models find. A 640x640 crop around where something moved keeps every pixel.
The crops come from the motion boxes and the tracked objects' predicted boxes: each grown by a margin,
nearby ones merged while the merged crop stays about as sharp, each at least the model's input (where
the frame is larger) and scaled down only when what it holds is larger. The whole frame is detected
instead when motion covers most of it or is all over it, or a crop would need more than the frame's
short side.
Each crop costs one model run, so at most `max_regions` run, the largest motion first.
"""

from __future__ import annotations

import numpy as np

from agent.pipeline.crops import Crop, RegionPlan

# Each side of a box grows by this share of its larger side: the model sees the object with as much
# background around it as in training (it fills at most half the crop), and a moving object is still
# inside on the next frame. With a quarter, the fixture model missed more objects on crops of the
# 640x480 sample video than on the whole frame (258 against 322 found); with a half, 323.
MARGIN = 0.5
# Two crops merge into one when the merged crop is at most this much larger than the larger of them
# (one model run instead of two, at a small loss of sharpness).
MERGE_GROWTH = 1.2
# Motion boxes covering this share of the frame mean a scene-wide change: the whole frame is detected.
WHOLE_FRAME_SHARE = 0.5
# More separate moving areas than this (rain, snow, a shaking camera) are a scene-wide change too.
MAX_MOTION_BOXES = 32
# Crops only where the whole frame is shrunk at least this much to fit the model (1080p into 640, 720p
# into 320): a smaller frame shows objects large enough already, and crops there cost runs for nothing
# (the 640x480 sample video on the 256 fixture model: 1.6x the CPU for 325 objects found against 322).
MIN_SHRINK = 3.0
# An object at least this many pixels across in the whole frame as the model sees it is found there: it
# gets no crop of its own (the whole frame runs once for every such object). A crop would show it larger
# than a model sees most objects in training, and cost a run per object.
SEEN_PX = 64


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
    frame runs anyway (a refresh): the crops then only add what it sees too small, the tracked objects.
    Large objects are left to the whole frame, which then runs too (SEEN_PX)."""
    height, width = frame_hw
    if max(height, width) < MIN_SHRINK * input_side:
        return RegionPlan.whole_frame()
    motion = np.asarray(motion_boxes, np.float64).reshape(-1, 4)
    if whole:
        motion = motion[:0]  # the whole frame looks at the motion already
    elif float(_areas(motion).sum()) >= WHOLE_FRAME_SHARE or len(motion) > MAX_MOTION_BOXES:
        return RegionPlan.whole_frame()
    boxes = np.concatenate(
        [motion * [width, height, width, height], np.asarray(track_boxes, np.float64).reshape(-1, 4)]
    )
    weights = np.concatenate([_areas(boxes[: len(motion)]), np.zeros(len(boxes) - len(motion))])
    seen = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * input_side / max(height, width)
    large = seen >= SEEN_PX
    whole = whole or bool(large.any())
    boxes, weights = boxes[~large], weights[~large]
    if not len(boxes):
        return RegionPlan.whole_frame()
    merged = _merged(boxes, weights, input_side, min(height, width))
    if merged is None:
        # Something larger than the frame's short side moves: the whole frame shrinks it least.
        return RegionPlan.whole_frame()
    boxes, weights = merged
    if float((_sides(boxes, input_side).astype(np.float64) ** 2).sum()) >= height * width:
        return RegionPlan.whole_frame()  # motion all over (rain, snow): one whole frame costs less than the crops
    order = np.argsort(-weights, kind="stable")  # the largest motion first, tracked objects without any last
    crops = tuple(_crop(boxes[i], input_side, frame_hw) for i in order[:max_regions].tolist())
    return RegionPlan(crops, whole, dropped=max(0, len(boxes) - max_regions))


def _merged(
    boxes: np.ndarray, weights: np.ndarray, input_side: int, short: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Merge the pair whose merged crop is smallest, while it is at most MERGE_GROWTH times the larger of the
    two; None when a crop would need more than the frame's short side."""
    sides = _sides(boxes, input_side)
    while len(boxes) > 1:
        union = np.concatenate(
            [np.minimum(boxes[:, None, :2], boxes[None, :, :2]), np.maximum(boxes[:, None, 2:], boxes[None, :, 2:])],
            axis=2,
        )
        union_sides = _sides(union.reshape(-1, 4), input_side).reshape(len(boxes), len(boxes))
        fits = union_sides <= np.maximum(sides[:, None], sides[None, :]) * MERGE_GROWTH
        fits &= np.triu(np.ones_like(fits), 1)
        if not fits.any():
            break
        i, j = np.unravel_index(np.argmin(np.where(fits, union_sides, np.inf)), fits.shape)
        boxes[i], weights[i], sides[i] = union[i, j], weights[i] + weights[j], union_sides[i, j]
        boxes, weights, sides = np.delete(boxes, j, 0), np.delete(weights, j), np.delete(sides, j)
    if (sides > short).any():
        return None
    return boxes, weights


def _sides(boxes: np.ndarray, input_side: int) -> np.ndarray:
    """The crop side per box: its larger side plus the margins, at least the model's input."""
    larger = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return np.maximum(input_side, np.ceil(larger * (1 + 2 * MARGIN))).astype(np.int64)


def _crop(box: np.ndarray, input_side: int, frame_hw: tuple[int, int]) -> Crop:
    """The square of `_sides` centred on the box, moved inside the frame."""
    height, width = frame_hw
    side = min(int(_sides(box[None], input_side)[0]), height, width)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x = round(min(max(cx - side / 2, 0), width - side))
    y = round(min(max(cy - side / 2, 0), height - side))
    return Crop(int(x), int(y), side)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
