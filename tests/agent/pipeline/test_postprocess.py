import numpy as np
import pytest

from agent.pipeline.detections import Detections
from agent.pipeline.letterbox import Letterbox
from agent.pipeline.nms import nms_class_aware
from agent.pipeline.postprocess import Postprocessor, PostprocessSettings, decode_classic, decode_end2end


def classic_output(rows: list[tuple[float, float, float, float, int, float]], classes: int, anchors: int = 10):
    """(1, 4 + classes, anchors) with one anchor per row: cx, cy, w, h, class id, score."""
    output = np.zeros((1, 4 + classes, anchors), np.float32)
    for anchor, (cx, cy, w, h, class_id, score) in enumerate(rows):
        output[0, :4, anchor] = (cx, cy, w, h)
        output[0, 4 + class_id, anchor] = score
    return output


@pytest.mark.parametrize(
    ("boxes", "scores", "class_ids", "iou", "expected"),
    [
        ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.9, 0.8], [0, 0], 0.5, [0]),  # IoU 0.68: suppressed
        ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.9, 0.8], [0, 1], 0.5, [0, 1]),  # other class: kept
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.7, 0.8], [0, 0], 0.5, [1, 0]),  # IoU 0.33: kept, by score
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.7, 0.8], [0, 0], 0.3, [1]),
        ([], [], [], 0.5, []),
    ],
)
def test_nms_table(boxes, scores, class_ids, iou, expected):
    keep = nms_class_aware(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores), np.array(class_ids), iou, 10)
    assert keep.tolist() == expected


def test_classic_decode_thresholds_and_converts_to_xyxy():
    output = classic_output([(50, 50, 20, 10, 1, 0.9), (100, 100, 10, 10, 0, 0.1)], classes=2)
    detections = decode_classic(output, PostprocessSettings(confidence=0.25))
    assert len(detections) == 1
    np.testing.assert_allclose(detections.boxes_xyxy, [[40, 45, 60, 55]])
    assert detections.class_ids.tolist() == [1]
    assert detections.scores.tolist() == pytest.approx([0.9])


@pytest.mark.parametrize(
    ("settings", "expected_classes"),
    [
        (PostprocessSettings(confidence=0.5), [0, 2]),
        (PostprocessSettings(confidence=0.5, classes=frozenset({2})), [2]),
        (PostprocessSettings(confidence=0.5, class_confidence={1: 0.3}), [0, 1, 2]),
        (PostprocessSettings(confidence=0.5, class_confidence={0: 0.95}), [2]),
    ],
)
def test_class_filter_and_per_class_thresholds(settings, expected_classes):
    output = classic_output([(20, 20, 10, 10, 0, 0.9), (60, 60, 10, 10, 1, 0.4), (100, 100, 10, 10, 2, 0.6)], 3)
    assert sorted(decode_classic(output, settings).class_ids.tolist()) == expected_classes


def test_end2end_decode():
    output = np.zeros((1, 300, 6), np.float32)
    output[0, 0] = (10, 20, 30, 40, 0.8, 3)
    output[0, 1] = (50, 60, 70, 80, 0.9, 1)
    output[0, 2] = (0, 0, 5, 5, 0.1, 0)
    detections = decode_end2end(output, PostprocessSettings(confidence=0.25))
    assert detections.class_ids.tolist() == [1, 3]  # highest score first
    np.testing.assert_allclose(detections.boxes_xyxy, [[50, 60, 70, 80], [10, 20, 30, 40]])


@pytest.mark.parametrize(
    ("decoder", "shape"), [(decode_classic, (1, 3, 10)), (decode_classic, (84, 100)), (decode_end2end, (1, 300, 4))]
)
def test_wrong_output_shape_names_the_expected_one(decoder, shape):
    with pytest.raises(ValueError, match="must have shape"):
        decoder(np.zeros(shape, np.float32), PostprocessSettings())


def test_postprocessor_maps_boxes_to_source_frame():
    letterbox = Letterbox((320, 320))
    transform = letterbox.transform_for((240, 320))  # pad_y = 40
    output = classic_output([(160, 160, 32, 32, 0, 0.9)], classes=1)
    detections = Postprocessor("classic", PostprocessSettings())(output, transform)
    np.testing.assert_allclose(detections.boxes_xyxy, [[144, 104, 176, 136]])


def test_detections_validate_shapes_and_are_read_only():
    with pytest.raises(ValueError, match=r"boxes_xyxy must have shape \(N, 4\)"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="same length"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))
    detections = Detections(np.zeros((2, 4)), np.array([0.5, 0.9]), np.array([1, 2]))
    with pytest.raises(ValueError):
        detections.scores[0] = 1.0
    assert len(detections[detections.scores > 0.6]) == 1
    assert len(Detections.empty()) == 0
