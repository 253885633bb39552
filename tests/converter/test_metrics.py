"""Tests for converter.metrics: hand-computed cases plus a cross-check against Ultralytics' own code.

Every AP a single class can reach here is 0.995 x (constant precision) because Ultralytics' compute_ap
drops the interpolated precision to 0 at recall 1.0 and integrates 101 points with the trapezoid rule:
the last interval contributes half. So "perfect" is 0.995, not 1.0, exactly as model.val() reports it.
"""

from __future__ import annotations

import numpy as np
import pytest

from converter.metrics import (
    IOU_THRESHOLDS,
    AgreementMetrics,
    DetectionMetrics,
    ImageEval,
    agreement,
    box_iou_xyxy,
    evaluate_detections,
    match_predictions,
)

PERFECT = 0.995  # Ultralytics' ceiling for one class, see module docstring
SQUARE = [0.0, 0.0, 10.0, 10.0]  # area 100, so a box [0, 0, 10, h] inside it has IoU h / 10
FAR = [50.0, 50.0, 60.0, 60.0]  # overlaps nothing near SQUARE


def image(
    preds: list[tuple[list[float], float, int]] | None = None,
    truths: list[tuple[list[float], int]] | None = None,
) -> ImageEval:
    """Build an ImageEval from (box, score, class) predictions and (box, class) ground truth."""
    preds = preds or []
    truths = truths or []
    return ImageEval(
        pred_boxes_xyxy=np.array([b for b, _, _ in preds], dtype=float).reshape(-1, 4),
        pred_scores=np.array([s for _, s, _ in preds], dtype=float),
        pred_class_ids=np.array([c for _, _, c in preds], dtype=int),
        true_boxes_xyxy=np.array([b for b, _ in truths], dtype=float).reshape(-1, 4),
        true_class_ids=np.array([c for _, c in truths], dtype=int),
    )


# ---------------------------------------------------------------------------------------------- box_iou_xyxy


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(SQUARE, SQUARE, 1.0, id="identical"),
        pytest.param(SQUARE, FAR, 0.0, id="disjoint"),
        pytest.param([0, 0, 2, 1], [1, 0, 3, 1], 1 / 3, id="half-overlap"),
        pytest.param([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16, id="contained"),
        pytest.param([0, 0, 1, 1], [1, 0, 2, 1], 0.0, id="touching-edge"),
        pytest.param([0, 0, 10, 10], [0, 0, 10, 6], 0.6, id="shrunk"),
        pytest.param([1, 1, 1, 1], [1, 1, 1, 1], 0.0, id="both-zero-area"),
        pytest.param([2, 2, 0, 0], [0, 0, 2, 2], 0.0, id="inverted-is-empty"),
    ],
)
def test_box_iou_hand_cases(a: list[float], b: list[float], expected: float) -> None:
    iou = box_iou_xyxy(np.array([a], dtype=float), np.array([b], dtype=float))
    assert iou.shape == (1, 1)
    assert iou[0, 0] == pytest.approx(expected, abs=1e-12)
    # IoU is symmetric
    assert box_iou_xyxy(np.array([b], dtype=float), np.array([a], dtype=float))[0, 0] == pytest.approx(iou[0, 0])


def test_box_iou_shape_and_layout() -> None:
    a = np.array([SQUARE, FAR])
    b = np.array([FAR, [0, 0, 10, 5], SQUARE])
    expected = np.array([[0.0, 0.5, 1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(box_iou_xyxy(a, b), expected, atol=1e-12)
    assert box_iou_xyxy(np.zeros((0, 4)), b).shape == (0, 3)
    assert box_iou_xyxy(a, np.zeros((0, 4))).shape == (2, 0)


def test_box_iou_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou_xyxy(np.zeros((2, 5)), np.zeros((1, 4)))


# ------------------------------------------------------------------------------------------ ImageEval shapes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"pred_boxes_xyxy": np.zeros((2, 3))}, r"pred_boxes_xyxy must have shape \(N, 4\)", id="3-cols"),
        pytest.param({"pred_boxes_xyxy": np.zeros(8)}, r"pred_boxes_xyxy must have shape \(N, 4\)", id="flat"),
        pytest.param({"true_boxes_xyxy": np.zeros((1, 4, 1))}, r"true_boxes_xyxy must have shape \(N, 4\)", id="3d"),
        pytest.param({"pred_scores": np.zeros(3)}, r"pred_scores must have shape \(2,\)", id="scores-len"),
        pytest.param({"pred_scores": np.zeros((2, 1))}, r"pred_scores must have shape \(2,\)", id="scores-2d"),
        pytest.param({"pred_class_ids": np.zeros(1)}, r"pred_class_ids must have shape \(2,\)", id="pred-cls-len"),
        pytest.param({"true_class_ids": np.zeros(2)}, r"true_class_ids must have shape \(1,\)", id="true-cls-len"),
        pytest.param({"true_class_ids": np.array([0.5])}, r"whole-number", id="fractional-class"),
    ],
)
def test_image_eval_validates_shapes(kwargs: dict[str, np.ndarray], message: str) -> None:
    good = {
        "pred_boxes_xyxy": np.zeros((2, 4)),
        "pred_scores": np.zeros(2),
        "pred_class_ids": np.zeros(2, dtype=int),
        "true_boxes_xyxy": np.zeros((1, 4)),
        "true_class_ids": np.zeros(1, dtype=int),
    }
    with pytest.raises(ValueError, match=message):
        ImageEval(**{**good, **kwargs})


def test_image_eval_accepts_plain_empty_arrays_and_float_class_ids() -> None:
    ev = ImageEval(np.array([]), np.array([]), np.array([]), [[0, 0, 1, 1]], [2.0])
    assert ev.pred_boxes_xyxy.shape == (0, 4)
    assert ev.pred_scores.shape == (0,)
    assert ev.true_class_ids.dtype == np.int64
    assert ev.true_class_ids.tolist() == [2]


# ------------------------------------------------------------------------------------------------- matching


def test_iou_thresholds_are_coco() -> None:
    np.testing.assert_allclose(IOU_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


def test_match_predictions_is_greedy_in_score_order() -> None:
    # Row order of the input is deliberately not score order: the 0.9 prediction must claim the box first.
    tp = match_predictions(
        pred_boxes_xyxy=np.array([[0, 0, 10, 9.2], [0, 0, 10, 7.2]]),  # IoU 0.92, IoU 0.72
        pred_scores=np.array([0.8, 0.9]),
        pred_class_ids=np.array([0, 0]),
        true_boxes_xyxy=np.array([SQUARE]),
        true_class_ids=np.array([0]),
    )
    # Thresholds 0.50-0.70: the 0.72 box (higher score) takes it. 0.75-0.90: only the 0.92 box qualifies.
    np.testing.assert_array_equal(tp[1], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(tp[0], [0, 0, 0, 0, 0, 1, 1, 1, 1, 0])


# ---------------------------------------------------------------------------------------- evaluate_detections


@pytest.mark.parametrize(
    ("images", "map50", "map50_95"),
    [
        pytest.param([image([(SQUARE, 0.9, 0)], [(SQUARE, 0)])], PERFECT, PERFECT, id="perfect-one"),
        pytest.param(
            [
                image([(SQUARE, 0.9, 0), (FAR, 0.3, 0)], [(SQUARE, 0), (FAR, 0)]),
                image([([20, 20, 30, 40], 0.5, 0)], [([20, 20, 30, 40], 0)]),
            ],
            PERFECT,
            PERFECT,
            id="perfect-many",
        ),
        pytest.param([image([], [(SQUARE, 0)])], 0.0, 0.0, id="no-predictions"),
        pytest.param([image([(SQUARE, 0.9, 1)], [(SQUARE, 0)])], 0.0, 0.0, id="wrong-class"),
        pytest.param([image([(FAR, 0.9, 0)], [(SQUARE, 0)])], 0.0, 0.0, id="wrong-place"),
        # IoU h/10 passes k of the 10 thresholds -> AP50-95 = 0.995 * k / 10.
        pytest.param([image([([0, 0, 10, 4.9], 0.9, 0)], [(SQUARE, 0)])], 0.0, 0.0, id="iou-0.49"),
        pytest.param([image([([0, 0, 10, 5.2], 0.9, 0)], [(SQUARE, 0)])], PERFECT, PERFECT * 0.1, id="iou-0.52"),
        pytest.param([image([([0, 0, 10, 5.8], 0.9, 0)], [(SQUARE, 0)])], PERFECT, PERFECT * 0.2, id="iou-0.58"),
        # IoU exactly on a threshold counts (>=), as in Ultralytics: 0.50, 0.55 and 0.60.
        pytest.param([image([([0, 0, 10, 6.0], 0.9, 0)], [(SQUARE, 0)])], PERFECT, PERFECT * 0.3, id="iou-0.60"),
        pytest.param([image([([0, 0, 10, 7.7], 0.9, 0)], [(SQUARE, 0)])], PERFECT, PERFECT * 0.6, id="iou-0.77"),
        pytest.param([image([([0, 0, 10, 9.7], 0.9, 0)], [(SQUARE, 0)])], PERFECT, PERFECT, id="iou-0.97"),
        # A duplicate ranked below the true positive only adds precision loss after full recall: no change.
        pytest.param([image([(SQUARE, 0.9, 0), (SQUARE, 0.8, 0)], [(SQUARE, 0)])], PERFECT, PERFECT, id="dup-below"),
        # A false positive ranked first: precision 1/2 at the only recall step -> 0.995 / 2.
        pytest.param([image([(FAR, 0.9, 0), (SQUARE, 0.8, 0)], [(SQUARE, 0)])], 0.4975, 0.4975, id="fp-first"),
        pytest.param(
            [image([(FAR, 0.9, 0), ([60, 60, 70, 70], 0.85, 0), (SQUARE, 0.8, 0)], [(SQUARE, 0)])],
            PERFECT / 3,
            PERFECT / 3,
            id="two-fp-first",
        ),
        # Two labels, ranking TP, FP, TP: envelope is 1 on recall [0, 0.5) and 2/3 on [0.5, 1), 0 at 1.
        # Trapezoid over 101 points (step 0.01): 0.01 * (50 * 1 + 50 * 2/3 - (1 + 0) / 2) = 0.828333...
        pytest.param(
            [image([(SQUARE, 0.9, 0), ([60, 60, 70, 70], 0.8, 0), (FAR, 0.7, 0)], [(SQUARE, 0), (FAR, 0)])],
            0.01 * (50 + 50 * 2 / 3 - 0.5),
            0.01 * (50 + 50 * 2 / 3 - 0.5),
            id="tp-fp-tp",
        ),
        # The FP is on another image with no labels; ranking across images still puts it first.
        pytest.param(
            [image([(SQUARE, 0.5, 0)], [(SQUARE, 0)]), image([(FAR, 0.9, 0)], [])], 0.4975, 0.4975, id="cross-image-fp"
        ),
        pytest.param(
            [image([(SQUARE, 0.5, 0)], [(SQUARE, 0)]), image([(FAR, 0.1, 0)], [])], PERFECT, PERFECT, id="cross-fp-low"
        ),
        # Greedy by score: the 0.72-IoU box (score 0.9) owns the label at 0.50-0.70 (AP 0.995 there), the
        # 0.92-IoU box (score 0.8) only at 0.75-0.90 where it ranks after an FP (AP 0.4975), none at 0.95.
        pytest.param(
            [image([([0, 0, 10, 7.2], 0.9, 0), ([0, 0, 10, 9.2], 0.8, 0)], [(SQUARE, 0)])],
            PERFECT,
            (5 * PERFECT + 4 * 0.4975) / 10,
            id="score-order-greedy",
        ),
    ],
)
def test_evaluate_single_class(images: list[ImageEval], map50: float, map50_95: float) -> None:
    m = evaluate_detections(images)
    assert m.map50 == pytest.approx(map50, abs=1e-9)
    assert m.map50_95 == pytest.approx(map50_95, abs=1e-9)
    assert m.per_class_map50_95 == {0: pytest.approx(map50_95, abs=1e-9)}
    assert m.images == len(images)
    assert m.instances == sum(len(i.true_class_ids) for i in images)


@pytest.mark.parametrize(
    ("images", "map50", "map50_95", "per_class"),
    [
        pytest.param(
            [image([(SQUARE, 0.9, 0)], [(SQUARE, 0), (FAR, 1)])],
            PERFECT / 2,
            PERFECT / 2,
            {0: PERFECT, 1: 0.0},
            id="one-class-missed",
        ),
        pytest.param(
            [image([(SQUARE, 0.9, 0), ([50, 50, 60, 55.8], 0.8, 1)], [(SQUARE, 0), (FAR, 1)])],
            PERFECT,
            (PERFECT + PERFECT * 0.2) / 2,
            {0: PERFECT, 1: PERFECT * 0.2},
            id="perfect-and-iou-0.58",
        ),
        pytest.param(
            [image([(SQUARE, 0.9, 0)], [(SQUARE, 0)]), image([(FAR, 0.2, 3), (FAR, 0.9, 1)], [(FAR, 3)])],
            PERFECT,
            PERFECT,
            {0: PERFECT, 3: PERFECT},
            id="class-without-labels-ignored",
        ),
        pytest.param(
            [image([(SQUARE, 0.9, 1), (FAR, 0.8, 0)], [(SQUARE, 0), (FAR, 1)])],
            0.0,
            0.0,
            {0: 0.0, 1: 0.0},
            id="classes-swapped",
        ),
    ],
)
def test_evaluate_multi_class(
    images: list[ImageEval], map50: float, map50_95: float, per_class: dict[int, float]
) -> None:
    m = evaluate_detections(images)
    assert m.map50 == pytest.approx(map50, abs=1e-9)
    assert m.map50_95 == pytest.approx(map50_95, abs=1e-9)
    assert m.per_class_map50_95 == pytest.approx(per_class, abs=1e-9)
    assert set(m.per_class_map50_95) == set(per_class)
    assert all(type(k) is int for k in m.per_class_map50_95)


@pytest.mark.parametrize(
    ("images", "n_images"),
    [
        pytest.param([], 0, id="no-images"),
        pytest.param([image(), image()], 2, id="empty-images"),
        pytest.param([image([(SQUARE, 0.9, 0)], [])], 1, id="predictions-but-no-labels"),
    ],
)
def test_evaluate_without_labels_is_zero(images: list[ImageEval], n_images: int) -> None:
    m = evaluate_detections(iter(images))  # any iterable, consumed once
    assert m == DetectionMetrics(map50=0.0, map50_95=0.0, per_class_map50_95={}, images=n_images, instances=0)
    assert isinstance(m.map50, float)
    assert not np.isnan(m.map50_95)


def test_evaluate_ignores_prediction_input_order() -> None:
    preds = [(FAR, 0.9, 0), ([0, 0, 10, 5.8], 0.3, 0), (SQUARE, 0.6, 0), ([20, 20, 30, 30], 0.7, 1)]
    truths = [(SQUARE, 0), (FAR, 0), ([20, 20, 30, 31], 1)]
    forward = evaluate_detections([image(preds, truths)])
    backward = evaluate_detections([image(preds[::-1], truths[::-1])])
    assert forward == backward
    assert 0.0 < forward.map50_95 < forward.map50


# ------------------------------------------------------------------------------------------------ agreement


def test_agreement_identical() -> None:
    ref = [
        (np.array([SQUARE, FAR]), np.array([0, 1])),
        (np.zeros((0, 4)), np.zeros(0, dtype=int)),
        (np.array([[5.0, 5, 25, 25]]), np.array([2])),
    ]
    cand = [(boxes, np.linspace(0.9, 0.5, len(cls)), cls) for boxes, cls in ref]
    result = agreement(ref, cand)
    assert result == AgreementMetrics(map50=pytest.approx(PERFECT), mean_best_iou=pytest.approx(1.0), reference_boxes=3)


@pytest.mark.parametrize(
    ("ref", "cand", "expected"),
    [
        pytest.param(
            [(np.array([SQUARE]), np.array([0]))],
            [(np.array([[0, 0, 10, 5.8]]), np.array([0.9]), np.array([0]))],
            AgreementMetrics(PERFECT, 0.58, 1),
            id="shifted",
        ),
        pytest.param(
            [(np.array([SQUARE, FAR]), np.array([0, 0]))],
            [(np.array([[0, 0, 10, 5.8], [0, 0, 10, 8.0]]), np.array([0.9, 0.8]), np.array([0, 0]))],
            # The best IoU per reference box ignores one-to-one matching: SQUARE -> 0.8, FAR -> 0.
            # map50: ranking TP, FP over 2 labels -> envelope 1 on recall [0, 0.5), 0 from 0.5 on (np.interp
            # takes the last sentinel at the repeated recall 0.5): 0.01 * (49 * 1 + (1 + 0) / 2) = 0.495.
            AgreementMetrics(0.495, 0.4, 2),
            id="best-not-first",
        ),
        pytest.param(
            [(np.array([SQUARE]), np.array([0]))],
            [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int))],
            AgreementMetrics(0.0, 0.0, 1),
            id="candidate-empty",
        ),
        pytest.param(
            [(np.array([SQUARE]), np.array([0]))],
            [(np.array([SQUARE]), np.array([0.9]), np.array([1]))],
            AgreementMetrics(0.0, 0.0, 1),
            id="other-class",
        ),
        pytest.param(
            [(np.zeros((0, 4)), np.zeros(0, dtype=int))],
            [(np.array([SQUARE]), np.array([0.9]), np.array([1]))],
            AgreementMetrics(0.0, 0.0, 0),
            id="reference-empty",
        ),
        pytest.param([], [], AgreementMetrics(0.0, 0.0, 0), id="no-images"),
    ],
)
def test_agreement_cases(ref: list, cand: list, expected: AgreementMetrics) -> None:
    result = agreement(ref, cand)
    assert result.map50 == pytest.approx(expected.map50, abs=1e-9)
    assert result.mean_best_iou == pytest.approx(expected.mean_best_iou, abs=1e-9)
    assert result.reference_boxes == expected.reference_boxes


def test_agreement_rejects_different_image_counts() -> None:
    ref = [(np.array([SQUARE]), np.array([0]))] * 2
    cand = [(np.array([SQUARE]), np.array([0.9]), np.array([0]))]
    with pytest.raises(ValueError):
        agreement(ref, cand)


# ------------------------------------------------------------------------------------ Ultralytics cross-check


def _random_dataset(seed: int, n_images: int = 20, n_classes: int = 3) -> list[ImageEval]:
    """Ground truth plus detector-like predictions: jittered hits, some class confusions, some junk boxes."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        m = int(rng.integers(0, 7))  # 0 allowed: images without labels
        xy = rng.uniform(0, 560, (m, 2))
        truth = np.concatenate([xy, xy + rng.uniform(15, 80, (m, 2))], axis=1)
        truth_cls = rng.integers(0, n_classes, m)
        hit = rng.random(m) < 0.8  # missed objects
        pred = truth[hit] + rng.normal(0, 4, (int(hit.sum()), 4))
        pred_cls = np.where(
            rng.random(int(hit.sum())) < 0.1, rng.integers(0, n_classes, int(hit.sum())), truth_cls[hit]
        )
        n_junk = int(rng.integers(0, 4))
        jxy = rng.uniform(0, 560, (n_junk, 2))
        junk = np.concatenate([jxy, jxy + rng.uniform(15, 80, (n_junk, 2))], axis=1)
        n_dup = int(rng.integers(0, min(m, 2) + 1))  # second, looser detections of the same object
        dup = truth[:n_dup] + rng.normal(0, 8, (n_dup, 4))
        pred = np.concatenate([pred, junk, dup])
        pred_cls = np.concatenate([pred_cls, rng.integers(0, n_classes, n_junk), truth_cls[:n_dup]])
        images.append(ImageEval(pred, rng.random(len(pred)), pred_cls, truth, truth_cls))
    # One image whose objects are all missed, one with no labels but detections.
    images[0] = ImageEval(
        np.zeros((0, 4)), np.zeros(0), np.zeros(0), images[0].true_boxes_xyxy, images[0].true_class_ids
    )
    images[1] = ImageEval(images[1].pred_boxes_xyxy, images[1].pred_scores, images[1].pred_class_ids, [], [])
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_ultralytics(seed: int) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from types import SimpleNamespace

    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    # Ultralytics' own matcher only reads self.iouv, so it can run on a stand-in object.
    validator = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    images = _random_dataset(seed)
    tps, confs, pred_cls, target_cls = [], [], [], []
    for ev in images:
        # model.val() feeds NMS output, which is sorted by descending confidence.
        order = np.argsort(-ev.pred_scores, kind="stable")
        boxes, scores, cls = ev.pred_boxes_xyxy[order], ev.pred_scores[order], ev.pred_class_ids[order]
        if len(cls) == 0 or len(ev.true_class_ids) == 0:
            tp = np.zeros((len(cls), 10), dtype=bool)
        else:
            iou = box_iou(torch.from_numpy(ev.true_boxes_xyxy), torch.from_numpy(boxes))
            tp = BaseValidator.match_predictions(
                validator, torch.from_numpy(cls).float(), torch.from_numpy(ev.true_class_ids).float(), iou
            ).numpy()
        tps.append(tp)
        confs.append(scores)
        pred_cls.append(cls)
        target_cls.append(ev.true_class_ids)
    results = ap_per_class(
        np.concatenate(tps), np.concatenate(confs), np.concatenate(pred_cls), np.concatenate(target_cls)
    )
    ap, classes = results[5], results[6]
    assert len(classes) == 3 and ap.shape == (3, 10)  # the data really exercises three classes
    assert 0.1 < ap.mean() < 0.99  # neither trivial nor perfect, so disagreements would show

    mine = evaluate_detections(images)
    assert mine.map50 == pytest.approx(ap[:, 0].mean(), abs=1e-6)
    assert mine.map50_95 == pytest.approx(ap.mean(), abs=1e-6)
    assert mine.per_class_map50_95 == pytest.approx(dict(zip(classes.tolist(), ap.mean(1), strict=True)), abs=1e-6)
    assert mine.instances == len(np.concatenate(target_cls))
    assert mine.images == len(images)
