"""Snapshots: the frame, scaled down to a width cap, with its boxes and labels drawn, as JPEG bytes.

Scaling comes first: drawing on the small copy is cheaper and leaves the source frame untouched.
At 640 px wide this costs a few milliseconds, once per presence start or request. The same scaled
frame is also encoded before anything is drawn on it: a page that draws its own live boxes over the
picture (the dashboard) needs one without the boxes of an older moment in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from agent.pipeline.detections import Detections

# BGR, distinct on both light and dark scenes; class id picks one.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (211, 188, 0),
    (209, 130, 28),
    (255, 115, 100),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
    (200, 149, 255),
)


@dataclass(frozen=True)
class SnapshotSettings:
    """width: cap in pixels (narrower frames keep theirs). quality: JPEG quality 1..100. draw_regions: outline the
    crops the detector ran on (motion regions), a debugging aid."""

    width: int = 640
    quality: int = 80
    draw_regions: bool = False


def scaled_to_width(image_bgr: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """A new (H', W', 3) image no wider than `width`, and the factor applied; the input is never modified."""
    height, source_width = image_bgr.shape[:2]
    if source_width <= width:
        return image_bgr.copy(), 1.0
    scale = width / source_width
    size = (width, max(1, round(height * scale)))
    return cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA), scale


ZONE_COLOR = (0, 215, 255)  # amber: apart from the class palette's boxes
CROP_COLOR = (160, 160, 160)  # grey: the crops are the machinery, not what was seen


def draw_zones(image_bgr: np.ndarray, zones: Sequence[tuple[str, Sequence[tuple[float, float]]]]) -> None:
    """Outline each (name, normalized polygon) in place, its name at its first corner."""
    height, width = image_bgr.shape[:2]
    thickness = max(1, round(width / 400))
    font_scale = max(0.4, width / 1600)
    for name, polygon in zones:
        points = np.round(np.array(polygon, np.float64) * [width - 1, height - 1]).astype(np.int32)
        cv2.polylines(image_bgr, [points.reshape(-1, 1, 2)], True, ZONE_COLOR, thickness, cv2.LINE_AA)
        x, y = int(points[0][0]), int(points[0][1])
        cv2.putText(image_bgr, name, (x + 3, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ZONE_COLOR, 1)


def draw_crops(image_bgr: np.ndarray, crops: Sequence[tuple[int, int, int, int]], scale: float) -> None:
    """Outline each crop (xyxy source pixels) in place, dashed-looking thin grey, numbered in run order."""
    thickness = max(1, round(image_bgr.shape[1] / 640))
    for number, crop in enumerate(crops, 1):
        x1, y1, x2, y2 = (round(v * scale) for v in crop)
        cv2.rectangle(image_bgr, (x1, y1), (x2 - 1, y2 - 1), CROP_COLOR, thickness, cv2.LINE_4)
        cv2.putText(image_bgr, f"crop {number}", (x1 + 3, y2 - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, CROP_COLOR, 1)


def draw_detections(
    image_bgr: np.ndarray,
    detections: Detections,
    names: Mapping[int, str],
    scale: float,
    track_ids: Sequence[str | None] = (),
) -> None:
    """Draw boxes and their `box_tag`s in place; boxes_xyxy are source pixels, `scale` maps them to image."""
    height, width = image_bgr.shape[:2]
    thickness = max(1, round(width / 400))
    font_scale = max(0.4, width / 1600)
    boxes = np.round(detections.boxes_xyxy * scale).astype(np.int64)
    ids = track_ids or (None,) * len(detections)
    for (x1, y1, x2, y2), score, class_id, track_id in zip(
        boxes, detections.scores, detections.class_ids, ids, strict=True
    ):
        color = PALETTE[int(class_id) % len(PALETTE)]
        x1, x2 = int(np.clip(x1, 0, width - 1)), int(np.clip(x2, 0, width - 1))
        y1, y2 = int(np.clip(y1, 0, height - 1)), int(np.clip(y2, 0, height - 1))
        cv2.rectangle(image_bgr, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        tag = box_tag(names.get(int(class_id), str(int(class_id))), float(score), track_id)
        (text_w, text_h), baseline = cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        # Above the box when there is room, else inside its top edge.
        top = y1 - text_h - baseline - 2 if y1 - text_h - baseline - 2 >= 0 else y1
        cv2.rectangle(image_bgr, (x1, top), (x1 + text_w + 2, top + text_h + baseline + 2), color, cv2.FILLED)
        cv2.putText(
            image_bgr,
            tag,
            (x1 + 1, top + text_h + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )


def box_tag(label: str, score: float, track_id: str | None = None) -> str:
    """`circle 96% #abc123`: the label, the score in percent and the end of the track id (unique enough to
    tell the objects of one picture apart). The dashboard's page writes the same (fleet/dashboard/js/format.js
    boxTag): the percent of the score as `detections` carries it (4 decimals), halves rounded up, in the
    same double arithmetic as JavaScript's, so a box reads the same in a snapshot and on the page."""
    percent = math.floor(round(float(score), 4) * 100 + 0.5)
    return f"{label} {percent}% #{track_id[-6:]}" if track_id else f"{label} {percent}%"


@dataclass(frozen=True)
class SnapshotJpegs:
    """One frame as JPEG bytes twice: `drawn` with zones, boxes and tags; `clean` with nothing drawn."""

    drawn: bytes
    clean: bytes


def _jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # cv2 only fails here on an image it cannot hold, which is a bug upstream
        raise RuntimeError(f"cv2.imencode failed for a {image_bgr.shape} snapshot")
    return encoded.tobytes()


def snapshot_jpegs(
    image_bgr: np.ndarray,
    detections: Detections,
    names: Mapping[int, str],
    settings: SnapshotSettings,
    track_ids: Sequence[str | None] = (),
    zones: Sequence[tuple[str, Sequence[tuple[float, float]]]] = (),
    crops: Sequence[tuple[int, int, int, int]] = (),
) -> SnapshotJpegs:
    """`image_bgr` ((H, W, 3) uint8) scaled once to at most settings.width, encoded clean and then drawn on.
    crops: drawn when settings.draw_regions."""
    canvas, scale = scaled_to_width(image_bgr, settings.width)
    clean = _jpeg(canvas, settings.quality)
    if settings.draw_regions:
        draw_crops(canvas, crops, scale)
    draw_zones(canvas, zones)
    draw_detections(canvas, detections, names, scale, track_ids)
    return SnapshotJpegs(_jpeg(canvas, settings.quality), clean)
