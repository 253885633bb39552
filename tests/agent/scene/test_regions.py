"""Planning the crops of motion regions on literal boxes: size, placement, merging, order, the whole frame."""

from __future__ import annotations

import numpy as np
import pytest

from agent.pipeline.crops import Crop, RegionPlan
from agent.scene.regions import MARGIN, MAX_MOTION_BOXES, MIN_SHRINK, SEEN_PX, plan_regions

FRAME = (1080, 1920)
NO_TRACKS = np.zeros((0, 4), np.float32)


def norm(*boxes: tuple[float, float, float, float]) -> np.ndarray:
    """Pixel boxes of the 1080p frame as the motion detector gives them, 0..1."""
    return np.array(boxes, np.float64).reshape(-1, 4) / [1920, 1080, 1920, 1080]


def inside(box: tuple[float, float, float, float], crop: Crop) -> bool:
    x1, y1, x2, y2 = crop.box
    return x1 <= box[0] and y1 <= box[1] and box[2] <= x2 and box[3] <= y2


def test_a_small_motion_gets_one_crop_of_the_model_input_centred_on_it() -> None:
    box = (900.0, 500.0, 950.0, 560.0)
    plan = plan_regions(norm(box), NO_TRACKS, FRAME, 640, 3)
    assert not plan.whole and len(plan.crops) == 1
    crop = plan.crops[0]
    assert crop.side == 640 and inside(box, crop)
    assert abs(crop.x + 320 - 925) <= 1 and abs(crop.y + 320 - 530) <= 1


def test_a_crop_near_the_edge_moves_inside_the_frame() -> None:
    box = (1890.0, 1050.0, 1920.0, 1080.0)
    (crop,) = plan_regions(norm(box), NO_TRACKS, FRAME, 640, 3).crops
    assert crop == Crop(1920 - 640, 1080 - 640, 640)


def test_a_larger_motion_is_cut_with_its_margin_and_scaled_down_by_the_model() -> None:
    box = (100.0, 100.0, 400.0, 350.0)  # 300 px wide: more than a 320 input, 50 px in the whole frame at 320
    (crop,) = plan_regions(norm(box), NO_TRACKS, FRAME, 320, 3).crops
    assert crop.side == pytest.approx(300 * (1 + 2 * MARGIN), abs=1) and inside(box, crop)


def test_an_object_the_whole_frame_shows_large_enough_gets_no_crop_the_whole_frame_runs() -> None:
    large = (100.0, 100.0, 100.0 + SEEN_PX * 6, 300.0)  # SEEN_PX at a 320 model's scale of 1/6
    small = (1500.0, 800.0, 1540.0, 840.0)
    alone = plan_regions(norm(large), NO_TRACKS, FRAME, 320, 3)
    assert alone == RegionPlan.whole_frame()
    both = plan_regions(norm(large, small), NO_TRACKS, FRAME, 320, 3)
    assert both.whole and len(both.crops) == 1 and inside(small, both.crops[0]) and both.runs == 2


def test_motion_over_most_of_the_frame_runs_the_whole_frame() -> None:
    plan = plan_regions(np.array([[0.0, 0.0, 0.8, 0.7]]), NO_TRACKS, FRAME, 320, 3)
    assert plan == RegionPlan.whole_frame() and plan.runs == 1


def test_something_larger_than_the_short_side_runs_the_whole_frame() -> None:
    plan = plan_regions(norm((100.0, 0.0, 900.0, 800.0)), NO_TRACKS, FRAME, 320, 3)
    assert plan.whole and not plan.crops


def test_a_frame_shrunk_less_than_min_shrink_is_never_cropped() -> None:
    motion = np.array([[0.1, 0.1, 0.2, 0.2]])
    assert plan_regions(motion, NO_TRACKS, (480, 640), 640, 3).whole
    assert plan_regions(motion, NO_TRACKS, (480, 640), 256, 3).whole, "2.5x: the whole frame sees enough"
    assert plan_regions(motion, NO_TRACKS, (480, 640), int(640 / MIN_SHRINK), 3).crops
    assert plan_regions(motion, NO_TRACKS, (720, 1280), 320, 3).crops


def test_nearby_motion_shares_a_crop_and_far_apart_motion_gets_two() -> None:
    near = plan_regions(norm((100.0, 100.0, 150.0, 150.0), (300.0, 200.0, 350.0, 260.0)), NO_TRACKS, FRAME, 640, 3)
    assert len(near.crops) == 1
    far = plan_regions(norm((100.0, 100.0, 150.0, 150.0), (1700.0, 900.0, 1750.0, 960.0)), NO_TRACKS, FRAME, 640, 3)
    assert len(far.crops) == 2


def test_at_most_max_regions_run_the_largest_motion_first() -> None:
    small, large, middle = (100.0, 100.0, 110.0, 110.0), (1600.0, 100.0, 1700.0, 200.0), (900.0, 800.0, 950.0, 850.0)
    plan = plan_regions(norm(small, large, middle), NO_TRACKS, FRAME, 320, 2)
    assert len(plan.crops) == 2 and plan.dropped == 1
    assert inside(large, plan.crops[0]) and inside(middle, plan.crops[1])
    assert not plan.covers(np.array([small])).any(), "the left-out motion was not looked at"


def test_tracked_objects_get_crops_after_the_motion() -> None:
    track = np.array([[200.0, 700.0, 260.0, 800.0]], np.float32)
    motion = (1500.0, 200.0, 1550.0, 260.0)
    plan = plan_regions(norm(motion), track, FRAME, 320, 3)
    assert len(plan.crops) == 2 and inside(motion, plan.crops[0]) and inside(tuple(track[0]), plan.crops[1])
    assert plan_regions(norm(motion), track, FRAME, 320, 1).dropped == 1


def test_a_refresh_runs_the_whole_frame_and_crops_around_the_tracked_objects() -> None:
    track = np.array([[200.0, 700.0, 260.0, 800.0]], np.float32)
    plan = plan_regions(np.array([[0.0, 0.0, 1.0, 1.0]]), track, FRAME, 320, 3, whole=True)
    assert plan.whole and len(plan.crops) == 1 and inside(tuple(track[0]), plan.crops[0]) and plan.runs == 2


def test_motion_in_a_few_places_gets_crops_and_all_over_the_frame_the_whole_frame() -> None:
    rng = np.random.default_rng(1)
    leaves = rng.uniform(0, 150, size=(MAX_MOTION_BOXES, 2)) + np.array([1500, 100])  # a tree shaking, 150 x 150
    tree = plan_regions(norm(*np.concatenate([leaves, leaves + 6], axis=1)), NO_TRACKS, FRAME, 320, 4)
    assert len(tree.crops) == 1 and tree.crops[0].side == 320
    rain = rng.uniform(0, 0.99, size=(MAX_MOTION_BOXES + 1, 2))
    assert plan_regions(np.concatenate([rain, rain + 0.005], axis=1), NO_TRACKS, FRAME, 320, 4).whole
    scattered = rng.uniform(0, 0.95, size=(MAX_MOTION_BOXES, 2))  # fewer, but crops of them would cost more
    assert plan_regions(np.concatenate([scattered, scattered + 0.005], axis=1), NO_TRACKS, FRAME, 640, 4).whole


def test_covers_says_which_boxes_were_looked_at() -> None:
    plan = RegionPlan((Crop(0, 0, 320),), whole=False)
    boxes = np.array([[10, 10, 50, 50], [400, 400, 450, 450], [300, 300, 340, 340]], np.float32)
    assert plan.covers(boxes).tolist() == [True, False, True]
    assert RegionPlan.whole_frame().covers(boxes).tolist() == [True, True, True]
