"""Snapshots: the frame, scaled down to a width cap, with its boxes and labels drawn, as JPEG bytes.

Scaling comes first: drawing on the small copy is cheaper and leaves the source frame untouched.
At 640 px wide this costs a few milliseconds, once per presence start or request.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """width: cap in pixels (narrower frames keep theirs). quality: JPEG quality 1..100."""

    width: int = 640
    quality: int = 80


def scaled_to_width(image_bgr: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """A new (H', W', 3) image no wider than `width`, and the factor applied; the input is never modified."""
    height, source_width = image_bgr.shape[:2]
    if source_width <= width:
        return image_bgr.copy(), 1.0
    scale = width / source_width
    size = (width, max(1, round(height * scale)))
    return cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA), scale


def draw_detections(image_bgr: np.ndarray, detections: Detections, names: Mapping[int, str], scale: float) -> None:
    """Draw boxes and `label confidence` tags in place; boxes_xyxy are source pixels, `scale` maps them to image."""
    height, width = image_bgr.shape[:2]
    thickness = max(1, round(width / 400))
    font_scale = max(0.4, width / 1600)
    boxes = np.round(detections.boxes_xyxy * scale).astype(np.int64)
    for (x1, y1, x2, y2), score, class_id in zip(boxes, detections.scores, detections.class_ids, strict=True):
        color = PALETTE[int(class_id) % len(PALETTE)]
        x1, x2 = int(np.clip(x1, 0, width - 1)), int(np.clip(x2, 0, width - 1))
        y1, y2 = int(np.clip(y1, 0, height - 1)), int(np.clip(y2, 0, height - 1))
        cv2.rectangle(image_bgr, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        tag = f"{names.get(int(class_id), str(int(class_id)))} {float(score):.2f}"
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


def snapshot_jpeg(
    image_bgr: np.ndarray, detections: Detections, names: Mapping[int, str], settings: SnapshotSettings
) -> bytes:
    """JPEG bytes of `image_bgr` ((H, W, 3) uint8) scaled to at most settings.width, detections drawn."""
    canvas, scale = scaled_to_width(image_bgr, settings.width)
    draw_detections(canvas, detections, names, scale)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, settings.quality])
    if not ok:  # cv2 only fails here on an image it cannot hold, which is a bug upstream
        raise RuntimeError(f"cv2.imencode failed for a {canvas.shape} snapshot")
    return encoded.tobytes()
