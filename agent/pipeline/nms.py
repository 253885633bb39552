"""Class-aware non-maximum suppression (OpenCV's batched NMS)."""

from __future__ import annotations

import cv2
import numpy as np


def nms_class_aware(
    boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_detections: int
) -> np.ndarray:
    """Indices of the boxes to keep, highest score first.

    boxes_xyxy: (N, 4) float32 pixels; scores: (N,); class_ids: (N,) int.
    Boxes of different classes never suppress each other.
    """
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes_xywh = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    boxes_xywh[:, 2:] -= boxes_xywh[:, :2]
    keep = cv2.dnn.NMSBoxesBatched(
        boxes_xywh,
        np.asarray(scores, dtype=np.float32),
        np.asarray(class_ids, dtype=np.int32),
        0.0,
        float(iou_threshold),
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    # OpenCV returns kept boxes ordered by score; cap after that ordering.
    return keep[:max_detections]
