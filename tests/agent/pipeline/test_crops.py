"""Detecting on crops of a frame: boxes moved back onto the frame, one object seen twice kept once, and a
piece that a crop's edge cut short giving way to the whole object seen by another view."""

from __future__ import annotations

import cv2
import numpy as np

from agent.pipeline.crops import Crop, DetectView, RegionPlan, detect_plan, merge_views
from agent.pipeline.detections import Detections

FRAME_HW = (1080, 1920)


def blob_detector(calls: list[tuple[int, int]]) -> DetectView:
    """A perfect 'model': every white blob of the view it is given, class 0, score from its area (so a piece
    scores lower than nothing in particular: tests set scores where they matter). Records each view's size."""

    def detect(view: np.ndarray) -> tuple[Detections, float, float, float]:
        calls.append(view.shape[:2])
        count, _, stats, _ = cv2.connectedComponentsWithStats((view[:, :, 0] > 200).astype(np.uint8))
        boxes = [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:count]]
        found = Detections(
            np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32), np.zeros(len(boxes))
        )
        return found, 1.0, 10.0, 0.5

    return detect


def frame_with(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    image = np.full((*FRAME_HW, 3), 60, np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = 255
    return image


def test_boxes_found_in_crops_land_on_their_place_in_the_frame() -> None:
    calls: list[tuple[int, int]] = []
    image = frame_with((900, 500, 940, 560), (100, 900, 150, 950))
    plan = RegionPlan((Crop(700, 300, 320), Crop(0, 760, 320)), whole=False)
    found, pre, inf, post = detect_plan(blob_detector(calls), image, plan, 0.45, 300)
    assert calls == [(320, 320), (320, 320)], "the views are the crops, at the frame's resolution"
    assert sorted(found.boxes_xyxy.tolist()) == [[100, 900, 150, 950], [900, 500, 940, 560]]
    assert (pre, inf) == (2.0, 20.0) and post >= 1.0, "stage times add up over the views"


def test_an_object_in_two_overlapping_crops_is_one_detection() -> None:
    image = frame_with((900, 500, 940, 560))
    plan = RegionPlan((Crop(700, 300, 320), Crop(800, 400, 320)), whole=False)
    found = detect_plan(blob_detector([]), image, plan, 0.45, 300)[0]
    assert found.boxes_xyxy.tolist() == [[900, 500, 940, 560]]


def test_a_piece_cut_by_a_crop_edge_gives_way_to_the_whole_object() -> None:
    image = frame_with((1000, 500, 1100, 600))
    cut_crop, whole_crop = Crop(1050, 300, 320), Crop(900, 400, 320)  # the first holds only the right half
    found = detect_plan(blob_detector([]), image, RegionPlan((cut_crop, whole_crop), whole=False), 0.45, 300)[0]
    assert found.boxes_xyxy.tolist() == [[1000, 500, 1100, 600]]
    alone = detect_plan(blob_detector([]), image, RegionPlan((cut_crop,), whole=False), 0.45, 300)[0]
    assert alone.boxes_xyxy.tolist() == [[1050, 500, 1100, 600]], "with nothing better, the piece is kept"


def test_the_piece_loses_even_when_it_scores_higher() -> None:
    whole = Detections(np.array([[1000, 500, 1100, 600]], np.float32), np.array([0.5]), np.array([2]))
    piece = Detections(np.array([[1050, 500, 1100, 600]], np.float32), np.array([0.9]), np.array([2]))
    other_class = Detections(np.array([[1050, 500, 1100, 600]], np.float32), np.array([0.9]), np.array([3]))
    merged = merge_views([whole, piece, other_class], np.array([False, True, True]), 0.45, 300)
    kept = sorted(zip(merged.class_ids.tolist(), merged.boxes_xyxy[:, 0].tolist(), strict=True))
    assert kept == [(2, 1000.0), (3, 1050.0)], "a piece of another class is another object"


def test_a_box_at_the_frames_edge_is_not_a_piece() -> None:
    image = frame_with((1850, 500, 1920, 560))  # touches the frame's right edge, which is the crop's too
    plan = RegionPlan((Crop(1600, 300, 320), Crop(1400, 350, 560)), whole=False)
    found = detect_plan(blob_detector([]), image, plan, 0.45, 300)[0]
    assert found.boxes_xyxy.tolist() == [[1850, 500, 1920, 560]]


def test_whole_frame_and_crops_together_and_the_whole_frame_alone() -> None:
    calls: list[tuple[int, int]] = []
    image = frame_with((900, 500, 940, 560))
    both = RegionPlan((Crop(700, 300, 320),), whole=True)
    assert detect_plan(blob_detector(calls), image, both, 0.45, 300)[0].boxes_xyxy.tolist() == [[900, 500, 940, 560]]
    assert calls == [FRAME_HW, (320, 320)]
    calls.clear()
    detect_plan(blob_detector(calls), image, RegionPlan.whole_frame(), 0.45, 300)
    assert calls == [FRAME_HW]


def test_max_detections_caps_the_merged_set() -> None:
    image = frame_with(*[(700 + 40 * i, 400, 720 + 40 * i, 420) for i in range(6)])
    found = detect_plan(blob_detector([]), image, RegionPlan((Crop(650, 300, 320),), whole=False), 0.45, 4)[0]
    assert len(found) == 4
