"""The motion-regions benchmark's pure parts: the far video's true boxes are where its shapes are drawn, and the
scoring finds, misses and counts false positives as it says. No agent, no model."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fixture import far_video
from benchmarks.fixture.far_video import HEIGHT, SIZES, WIDTH, TrueBoxes, plan_far_scene, true_boxes
from benchmarks.regions_scoring import Seen, parse_detections, score_frame, score_run

SCENE = plan_far_scene(seconds=30.0, fps=5.0)


def busiest_frame() -> int:
    """A frame with the most shapes wholly in view."""
    return max(range(SCENE.frames), key=lambda i: int(true_boxes(SCENE, i).whole.sum()))


def test_the_scene_holds_every_size_a_few_at_a_time_without_overlaps() -> None:
    assert {o.size for o in plan_far_scene().objects} == set(SIZES)
    for index in range(0, SCENE.frames, 5):
        boxes = true_boxes(SCENE, index).boxes
        assert len(boxes) <= 4
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                rows_apart = boxes[a, 3] <= boxes[b, 1] or boxes[b, 3] <= boxes[a, 1]
                assert rows_apart, f"frame {index}: boxes {boxes[a]} and {boxes[b]} share rows"


def test_true_boxes_are_where_the_shapes_are_drawn() -> None:
    index = busiest_frame()
    truth = true_boxes(SCENE, index)
    assert truth.whole.sum() >= 2
    background = far_video._background(SCENE.seed)
    quiet = np.zeros((HEIGHT + far_video.NOISE_MARGIN, WIDTH + far_video.NOISE_MARGIN, 3), np.uint8)
    drawn = far_video.render(SCENE, background, (quiet, quiet), index)
    changed = np.abs(drawn.astype(np.int16) - background).max(axis=2) > 0
    inside = np.zeros_like(changed)
    for box, size, whole in zip(truth.boxes, truth.sizes, truth.whole, strict=True):
        x1, y1, x2, y2 = box
        # Corners are rounded to whole pixels and anti-aliased: the paint reaches up to 2 px past the exact box.
        rows = slice(max(0, int(y1) - 2), int(np.ceil(y2)) + 2)
        grown = (rows, slice(max(0, int(x1) - 2), int(np.ceil(x2)) + 2))
        inside[grown] = True
        if whole:
            assert y2 - y1 == pytest.approx(size, abs=0.01)
            rows, cols = np.nonzero(changed[grown])
            # The drawn shape fills its box: it reaches within 2.5 px of every side.
            top, left = grown[0].start, grown[1].start
            assert abs(top + rows.min() - y1) <= 2.5 and abs(top + rows.max() + 1 - y2) <= 2.5
            assert abs(left + cols.min() - x1) <= 2.5 and abs(left + cols.max() + 1 - x2) <= 2.5
    assert not (changed & ~inside).any(), "pixels drawn outside every true box"


def frame_truth(boxes: list[list[float]], class_ids: list[int], whole: list[bool] | None = None) -> TrueBoxes:
    n = len(boxes)
    return TrueBoxes(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(class_ids, np.int64),
        np.full(n, 54, np.int64),
        np.arange(n, dtype=np.int64),
        np.array(whole if whole is not None else [True] * n, bool),
    )


def seen(boxes: list[list[float]], class_ids: list[int]) -> Seen:
    return Seen(np.array(boxes, np.float32).reshape(-1, 4), np.array(class_ids, np.int64))


def test_a_detection_of_the_label_at_iou_half_finds_the_box() -> None:
    truth = frame_truth([[100, 100, 200, 200]], [1])
    # 100x100 against 100x150 sharing 100x100: IoU 0.667.
    score = score_frame(truth, seen([[100, 100, 200, 250]], [1]))
    assert score.found.tolist() == [True] and score.false_positives == 0


@pytest.mark.parametrize(
    ("detection", "label"),
    [
        ([100, 100, 200, 200], 2),  # the right place, another label
        ([100, 100, 200, 325], 1),  # the right label, IoU 100/225 = 0.44
        ([400, 400, 500, 500], 1),  # nowhere near
    ],
)
def test_a_wrong_label_or_a_poor_overlap_finds_nothing_and_is_false(detection: list[float], label: int) -> None:
    score = score_frame(frame_truth([[100, 100, 200, 200]], [1]), seen([detection], [label]))
    assert score.found.tolist() == [False] and score.false_positives == 1


def test_pairs_are_taken_in_descending_iou_and_a_duplicate_is_false() -> None:
    truth = frame_truth([[0, 0, 100, 100], [30, 0, 130, 100]], [0, 0])
    # The first detection overlaps the second box at IoU 0.95 and the first at 0.58; the second detection
    # only the first box, at 0.55. Taking the first box's best detection first would leave the second box
    # with nothing; by descending IoU both are found. The third repeats the second box: false.
    detections = seen([[25, 0, 130, 100], [0, 0, 100, 182], [30, 0, 130, 100]], [0, 0, 0])
    score = score_frame(truth, detections)
    assert score.found.tolist() == [True, True] and score.false_positives == 1


def test_a_shape_cut_by_the_border_is_neither_found_nor_false() -> None:
    truth = frame_truth([[0, 0, 40, 60], [300, 300, 400, 400]], [3, 3], whole=[False, True])
    score = score_frame(truth, seen([[0, 0, 40, 60]], [3]))
    assert score.found.tolist() == [False, False] and score.false_positives == 0


def test_a_message_maps_to_its_video_frame_and_pixels() -> None:
    message = {
        "frame": 7,
        "detections": [{"label": "star", "box": [0.5, 0.25, 0.75, 0.5]}, {"label": "cat", "box": [0, 0, 1, 1]}],
    }
    index, found = parse_detections(message)
    assert index == 6  # the source numbers frames from 1
    assert found.boxes[0].tolist() == [960.0, 270.0, 1440.0, 540.0]
    assert found.class_ids.tolist() == [3, -1]


def test_a_run_is_scored_on_its_detector_frames_and_on_every_frame() -> None:
    # The detector "ran" on every other frame and found everything there, plus one false box on each.
    ran = range(0, SCENE.frames, 2)
    perfect = {}
    for index in ran:
        truth = true_boxes(SCENE, index)
        perfect[index] = Seen(
            np.vstack([truth.boxes, [[0, 0, 10, 10]]]).astype(np.float32), np.append(truth.class_ids, 0)
        )
    score = score_run(SCENE, perfect)
    present = [b for b in score.buckets if b.in_view]
    assert present and all(b.recall == 1.0 for b in present)
    assert all(0.4 < b.found_share < 0.6 for b in present)
    assert score.detector_frames == len(ran) and score.false_positives == len(ran)
    pooled = score.pooled(SIZES)
    assert pooled.scored == sum(b.scored for b in present) and pooled.recall == 1.0
