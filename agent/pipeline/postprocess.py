"""Turn raw model output into Detections in source-frame pixels.

Two head layouts exist. The classic head, (1, 4 + nc, N), holds cx, cy, w, h in
input pixels followed by per-class scores, and needs NMS. The end-to-end head
of YOLO26, (1, N, 6), already holds x1, y1, x2, y2, score, class per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agent.bundle import HEAD_KINDS
from agent.pipeline.detections import Detections
from agent.pipeline.letterbox import LetterboxTransform, boxes_to_source
from agent.pipeline.nms import nms_class_aware

HeadKind = Literal["classic", "end2end"]


@dataclass(frozen=True)
class PostprocessSettings:
    """Thresholds that decide which detections survive.

    confidence: minimum score (0..1). iou: NMS overlap threshold (0..1).
    classes: class ids to keep; None keeps all. class_confidence: per-class
    minimum score overriding `confidence`. max_detections: cap per frame.
    """

    confidence: float = 0.25
    iou: float = 0.45
    classes: frozenset[int] | None = None
    class_confidence: dict[int, float] = field(default_factory=dict)
    max_detections: int = 300

    @property
    def floor(self) -> float:
        """The lowest threshold any class uses: cheap first filter before per-class checks."""
        return min([self.confidence, *self.class_confidence.values()])


def _keep_mask(scores: np.ndarray, class_ids: np.ndarray, settings: PostprocessSettings) -> np.ndarray:
    thresholds = np.full(len(scores), settings.confidence, dtype=np.float32)
    for class_id, threshold in settings.class_confidence.items():
        thresholds[class_ids == class_id] = threshold
    mask = scores >= thresholds
    if settings.classes is not None:
        mask &= np.isin(class_ids, np.fromiter(settings.classes, dtype=np.int64, count=len(settings.classes)))
    return mask


def decode_classic(output: np.ndarray, settings: PostprocessSettings) -> Detections:
    """Decode a (1, 4 + nc, N) output into detections in input-canvas pixels, after NMS."""
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] < 5:
        raise ValueError(f"classic head output must have shape (1, 4 + nc, N), got {output.shape}")
    prediction = output[0]
    class_scores = prediction[4:]
    # A cheap max over classes first: most of the N anchors score near zero,
    # so everything after this works on a few dozen columns.
    best_scores = class_scores.max(axis=0)
    candidates = np.flatnonzero(best_scores >= settings.floor)
    if candidates.size == 0:
        return Detections.empty()
    scores = best_scores[candidates]
    class_ids = class_scores[:, candidates].argmax(axis=0).astype(np.int64)
    keep = _keep_mask(scores, class_ids, settings)
    candidates, scores, class_ids = candidates[keep], scores[keep], class_ids[keep]
    cx, cy, w, h = prediction[:4, candidates]
    boxes_xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kept = nms_class_aware(boxes_xyxy, scores, class_ids, settings.iou, settings.max_detections)
    return Detections(boxes_xyxy[kept], scores[kept], class_ids[kept])


def decode_end2end(output: np.ndarray, settings: PostprocessSettings) -> Detections:
    """Threshold a (1, N, 6) end-to-end output into detections in input-canvas pixels."""
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[2] < 6:
        raise ValueError(f"end2end head output must have shape (1, N, 6), got {output.shape}")
    rows = output[0]
    scores = rows[:, 4]
    class_ids = rows[:, 5].astype(np.int64)
    keep = _keep_mask(scores, class_ids, settings)
    rows, scores, class_ids = rows[keep], scores[keep], class_ids[keep]
    order = np.argsort(-scores, kind="stable")[: settings.max_detections]
    return Detections(rows[order, :4], scores[order], class_ids[order])


class Postprocessor:
    """Decode the head and map boxes back onto the source frame."""

    def __init__(self, head: HeadKind, settings: PostprocessSettings) -> None:
        if head not in HEAD_KINDS:
            raise ValueError(f"head must be one of {HEAD_KINDS}, got {head!r}")
        self.head = head
        self.settings = settings
        self._decode = decode_classic if head == "classic" else decode_end2end

    def __call__(self, output: np.ndarray, transform: LetterboxTransform) -> Detections:
        """Detections with boxes_xyxy in source-frame pixels."""
        on_canvas = self._decode(output, self.settings)
        if len(on_canvas) == 0:
            return on_canvas
        return Detections(boxes_to_source(on_canvas.boxes_xyxy, transform), on_canvas.scores, on_canvas.class_ids)
