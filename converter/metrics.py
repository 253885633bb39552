"""COCO-style detection mAP, numerically matching Ultralytics' ``model.val()``.

The recipe follows ``ultralytics/utils/metrics.py`` (``ap_per_class`` / ``compute_ap``, 101-point
interpolated precision envelope integrated with the trapezoid rule) and the matching in
``BaseValidator.match_predictions`` of the installed Ultralytics (8.4): per image, predictions are
visited in descending score order and each claims the best still-unclaimed ground-truth box of its own
class, separately for each of the ten IoU thresholds 0.50:0.05:0.95.

Two consequences worth knowing when reading the numbers:

* A perfect detector scores 0.995, not 1.0, exactly as in Ultralytics: the recall sentinel makes the
  interpolated precision drop to 0 at recall 1.0 and the trapezoid rule averages that last point in.
* mAP is the mean over classes that have ground truth; predictions of other classes cost nothing.

Everything here is numpy only so the module can run on the device without torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IOU_THRESHOLDS",
    "AgreementMetrics",
    "DetectionMetrics",
    "ImageEval",
    "agreement",
    "box_iou_xyxy",
    "evaluate_detections",
]

IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
"""The ten COCO IoU thresholds 0.50, 0.55, ..., 0.95; column j of every ``tp`` matrix refers to entry j."""

_RECALL_GRID = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points
# Ultralytics divides recall by (n_labels + 1e-16); kept so recall is bit-identical to theirs.
_EPS = 1e-16
# np.trapz was renamed np.trapezoid in numpy 2.0; the project still allows numpy 1.24.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def _as_boxes(value: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        # np.array([]) is the natural way to write "no boxes"; accept it rather than force (0, 4).
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as x1, y1, x2, y2 pixels, got {arr.shape}")
    return arr


def _as_vector(value: np.ndarray, name: str, length: int, integer: bool = False) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        arr = arr.reshape(0)
    if arr.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},) to match its boxes, got {arr.shape}")
    if not integer:
        return arr.astype(np.float64)
    # Detectors often emit class ids as floats (e.g. 2.0); a fractional id is a bug, not something to truncate.
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError(f"{name} must hold whole-number class ids, got {arr}")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class ImageEval:
    """One image's predictions and ground truth.

    Attributes:
        pred_boxes_xyxy: (N, 4) float, predicted boxes as x1, y1, x2, y2 in pixels.
        pred_scores: (N,) float, confidence of each prediction (only its order matters).
        pred_class_ids: (N,) int, class id of each prediction.
        true_boxes_xyxy: (M, 4) float, ground-truth boxes as x1, y1, x2, y2 in the same pixel frame.
        true_class_ids: (M,) int, class id of each ground-truth box.

    Inputs are converted to float64 / int64 arrays; an empty array of any shape means "no boxes".
    """

    pred_boxes_xyxy: np.ndarray
    pred_scores: np.ndarray
    pred_class_ids: np.ndarray
    true_boxes_xyxy: np.ndarray
    true_class_ids: np.ndarray

    def __post_init__(self) -> None:
        pred_boxes = _as_boxes(self.pred_boxes_xyxy, "pred_boxes_xyxy")
        true_boxes = _as_boxes(self.true_boxes_xyxy, "true_boxes_xyxy")
        n, m = len(pred_boxes), len(true_boxes)
        # Frozen dataclass: normalised arrays have to be stored via object.__setattr__.
        object.__setattr__(self, "pred_boxes_xyxy", pred_boxes)
        object.__setattr__(self, "true_boxes_xyxy", true_boxes)
        object.__setattr__(self, "pred_scores", _as_vector(self.pred_scores, "pred_scores", n))
        object.__setattr__(self, "pred_class_ids", _as_vector(self.pred_class_ids, "pred_class_ids", n, True))
        object.__setattr__(self, "true_class_ids", _as_vector(self.true_class_ids, "true_class_ids", m, True))


@dataclass(frozen=True)
class DetectionMetrics:
    """Dataset-level detection accuracy.

    Attributes:
        map50: mean over classes with ground truth of AP at IoU 0.50, in [0, 0.995].
        map50_95: mean over those classes of AP averaged over IoU 0.50:0.05:0.95.
        per_class_map50_95: class id -> AP50-95, for every class that has at least one ground-truth box.
        images: number of images evaluated.
        instances: number of ground-truth boxes.
    """

    map50: float
    map50_95: float
    per_class_map50_95: dict[int, float]
    images: int
    instances: int


@dataclass(frozen=True)
class AgreementMetrics:
    """How closely a candidate model (e.g. INT8) reproduces a reference model's (e.g. FP32) detections.

    Attributes:
        map50: mAP50 of the candidate's detections scored with the reference's detections as ground truth.
        mean_best_iou: mean over reference boxes of the best IoU with a same-class candidate box (0 if none).
        reference_boxes: number of reference boxes.
    """

    map50: float
    mean_best_iou: float
    reference_boxes: int


def box_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union.

    Args:
        a: (N, 4) boxes as x1, y1, x2, y2.
        b: (M, 4) boxes as x1, y1, x2, y2, same units as ``a``.

    Returns:
        (N, M) float64 IoU in [0, 1]; 0 where both boxes have zero area.
    """
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    # Clip so an inverted (x2 < x1) box counts as empty instead of producing a negative area.
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    # Exact division with a guard rather than Ultralytics' "+ 1e-7": identical boxes give exactly 1.0.
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_predictions(
    pred_boxes_xyxy: np.ndarray,
    pred_scores: np.ndarray,
    pred_class_ids: np.ndarray,
    true_boxes_xyxy: np.ndarray,
    true_class_ids: np.ndarray,
    thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """Mark which predictions of one image are true positives at each IoU threshold.

    Args:
        pred_boxes_xyxy: (N, 4) predicted boxes, pixels.
        pred_scores: (N,) confidences; predictions are visited highest first.
        pred_class_ids: (N,) predicted class ids.
        true_boxes_xyxy: (M, 4) ground-truth boxes, pixels.
        true_class_ids: (M,) ground-truth class ids.
        thresholds: (T,) IoU thresholds.

    Returns:
        (N, T) bool, row i in the caller's prediction order: prediction i matched an unclaimed same-class
        ground-truth box with IoU >= thresholds[j].
    """
    n, t = len(pred_boxes_xyxy), len(thresholds)
    correct = np.zeros((n, t), dtype=bool)
    if n == 0 or len(true_boxes_xyxy) == 0:
        return correct
    # (M, N): a wrong-class pair can never match, so treat it as no overlap.
    iou = box_iou_xyxy(true_boxes_xyxy, pred_boxes_xyxy)
    iou = iou * (true_class_ids[:, None] == pred_class_ids[None, :])
    claimed = np.zeros((len(true_boxes_xyxy), t), dtype=bool)
    columns = np.arange(t)
    # Stable so equal scores keep the caller's order, which is what an NMS output list already is.
    order = np.argsort(-pred_scores, kind="stable")
    # A prediction below the lowest threshold everywhere can neither match nor claim; skipping it keeps
    # the Python loop short for the usual ~300 NMS outputs per image.
    for j in order[(iou[:, order] >= thresholds.min()).any(axis=0)]:
        available = np.where(claimed, 0.0, iou[:, j, None])  # (M, T)
        best = available.argmax(axis=0)  # per threshold, the highest-IoU box still free
        hit = available[best, columns] >= thresholds
        correct[j] = hit
        claimed[best, columns] |= hit
    return correct


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP of one class at one IoU threshold: 101-point interpolated precision envelope, trapezoid rule.

    Args:
        recall: (K,) cumulative recall after each of the K predictions, in descending score order.
        precision: (K,) cumulative precision at the same points.
    """
    # Sentinels exactly as Ultralytics' compute_ap, including the repeated last recall with precision 0
    # that caps a perfect detector at 0.995.
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    envelope = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(_trapezoid(np.interp(_RECALL_GRID, mrec, envelope), _RECALL_GRID))


def _ap_per_class(
    tp: np.ndarray, scores: np.ndarray, pred_class_ids: np.ndarray, true_class_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AP for every class that has ground truth, at every IoU threshold.

    Args:
        tp: (N, T) bool true-positive matrix over all predictions of the dataset.
        scores: (N,) confidences.
        pred_class_ids: (N,) predicted class ids.
        true_class_ids: (M,) class ids of all ground-truth boxes of the dataset.

    Returns:
        classes: (C,) sorted class ids that have ground truth.
        ap: (C, T) average precision.
    """
    # Same (default, unstable) sort call as Ultralytics so tied scores are ordered identically.
    order = np.argsort(-scores)
    tp, pred_class_ids = tp[order].astype(np.float64), pred_class_ids[order]
    classes, n_labels = np.unique(true_class_ids, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    for ci, (cls, n_l) in enumerate(zip(classes, n_labels, strict=True)):
        mine = pred_class_ids == cls
        if not mine.any():
            continue  # ground truth but never predicted: AP stays 0
        tpc = tp[mine].cumsum(axis=0)
        fpc = (1.0 - tp[mine]).cumsum(axis=0)
        recall = tpc / (n_l + _EPS)
        precision = tpc / (tpc + fpc)
        for j in range(tp.shape[1]):
            ap[ci, j] = _average_precision(recall[:, j], precision[:, j])
    return classes, ap


def evaluate_detections(images: Iterable[ImageEval]) -> DetectionMetrics:
    """Dataset mAP50 and mAP50-95, as Ultralytics' ``model.val()`` reports them for the same predictions.

    Args:
        images: one ``ImageEval`` per image; boxes of each image in one common pixel frame.

    Returns:
        ``DetectionMetrics``; all zeros when there is no ground truth at all.
    """
    tps: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    pred_cls: list[np.ndarray] = []
    true_cls: list[np.ndarray] = []
    n_images = 0
    for image in images:
        n_images += 1
        tps.append(
            match_predictions(
                image.pred_boxes_xyxy,
                image.pred_scores,
                image.pred_class_ids,
                image.true_boxes_xyxy,
                image.true_class_ids,
            )
        )
        scores.append(image.pred_scores)
        pred_cls.append(image.pred_class_ids)
        true_cls.append(image.true_class_ids)

    t = len(IOU_THRESHOLDS)
    # Seed each list with an empty array so concatenate works for zero images too.
    classes, ap = _ap_per_class(
        np.concatenate([np.zeros((0, t), dtype=bool), *tps]),
        np.concatenate([np.zeros(0), *scores]),
        np.concatenate([np.zeros(0, dtype=np.int64), *pred_cls]),
        np.concatenate([np.zeros(0, dtype=np.int64), *true_cls]),
    )
    instances = int(sum(len(c) for c in true_cls))
    if len(classes) == 0:
        return DetectionMetrics(0.0, 0.0, {}, n_images, instances)
    return DetectionMetrics(
        map50=float(ap[:, 0].mean()),
        map50_95=float(ap.mean()),
        per_class_map50_95={int(c): float(v) for c, v in zip(classes, ap.mean(axis=1), strict=True)},
        images=n_images,
        instances=instances,
    )


def agreement(
    reference: Iterable[tuple[np.ndarray, np.ndarray]],
    candidate: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> AgreementMetrics:
    """Score a candidate model's detections against a reference model's, for data without labels.

    Args:
        reference: per image ``(boxes_xyxy (M, 4) pixels, class_ids (M,))``, e.g. FP32 detections.
        candidate: per image ``(boxes_xyxy (N, 4) pixels, scores (N,), class_ids (N,))``, e.g. INT8 detections,
            in the same image order and pixel frame as ``reference``.

    Returns:
        ``AgreementMetrics``. Identical detections give map50 0.995 (the Ultralytics ceiling) and
        mean_best_iou 1.0; no reference boxes gives all zeros.

    Raises:
        ValueError: if the two iterables hold different numbers of images.
    """
    images: list[ImageEval] = []
    best_ious: list[np.ndarray] = []
    for (ref_boxes, ref_cls), (cand_boxes, cand_scores, cand_cls) in zip(reference, candidate, strict=True):
        image = ImageEval(cand_boxes, cand_scores, cand_cls, ref_boxes, ref_cls)
        images.append(image)
        if len(image.true_boxes_xyxy) == 0:
            continue
        iou = box_iou_xyxy(image.true_boxes_xyxy, image.pred_boxes_xyxy)
        iou = iou * (image.true_class_ids[:, None] == image.pred_class_ids[None, :])
        # A reference box with no same-class candidate at all scores 0 rather than being skipped.
        best_ious.append(iou.max(axis=1) if iou.shape[1] else np.zeros(len(iou)))

    det = evaluate_detections(images)
    all_best = np.concatenate([np.zeros(0), *best_ious])
    return AgreementMetrics(
        map50=det.map50,
        mean_best_iou=float(all_best.mean()) if len(all_best) else 0.0,
        reference_boxes=len(all_best),
    )
