"""MotionDetector on synthetic frames and DetectionGate on a table of moments."""

from __future__ import annotations

import numpy as np
import pytest

from agent.scene.motion import DetectionGate, MotionDetector, MotionSettings, block_factor, downscale_gray


def textured(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A static scene with texture (so absdiff has something to compare)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 180, size=(h // 8, w // 8, 1), dtype=np.uint8)
    return np.repeat(np.repeat(np.repeat(base, 8, 0), 8, 1), 3, 2)


def noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def test_a_static_noisy_scene_is_still_after_the_first_frame() -> None:
    detector, rng, scene = MotionDetector(MotionSettings()), np.random.default_rng(1), textured()
    first = detector.update(noisy(scene, rng))
    assert first.moving, "the first frame is always looked at"
    assert not any(detector.update(noisy(scene, rng)).moving for _ in range(100))


def test_slow_light_drift_is_not_motion() -> None:
    detector, scene = MotionDetector(MotionSettings()), textured().astype(np.int16)
    moving = [detector.update(np.clip(scene + i, 0, 255).astype(np.uint8)).moving for i in range(60)]
    assert not any(moving[1:]), moving


def test_a_moving_square_is_motion_with_a_region_where_it_is() -> None:
    detector, scene = MotionDetector(MotionSettings()), textured()
    detector.update(scene)
    for step in range(10):
        frame = scene.copy()
        x = 40 + 20 * step
        frame[100:140, x : x + 40] = 255
        motion = detector.update(frame)
        assert motion.moving, step
    assert motion.regions.shape[1] == 4 and not motion.regions.flags.writeable
    centres = (motion.regions[:, 0] + motion.regions[:, 2]) / 2
    # The square's centre is at x = (220 + 20) / 320 = 0.75 (plus its trail: the background still holds it).
    assert np.any(np.abs(centres - 0.72) < 0.12), motion.regions


def test_a_change_smaller_than_contour_area_does_not_count() -> None:
    detector, scene = MotionDetector(MotionSettings(contour_area=200)), textured()
    detector.update(scene)
    frame = scene.copy()
    frame[100:104, 100:104] = 255  # a few pixels of the downscaled frame
    assert not detector.update(frame).moving


def test_a_lighting_jump_relearns_instead_of_detecting_on_every_frame() -> None:
    detector, scene = MotionDetector(MotionSettings()), textured()
    detector.update(scene)
    bright = np.clip(scene.astype(np.int16) + 80, 0, 255).astype(np.uint8)
    jump = detector.update(bright)
    assert jump.relearned and not jump.moving and jump.changed >= 0.8
    assert not any(detector.update(bright).moving for _ in range(10))


def test_large_frames_are_downscaled_and_regions_are_normalized() -> None:
    detector, scene = MotionDetector(MotionSettings()), textured(720, 1280)
    detector.update(scene)
    frame = scene.copy()
    frame[300:500, 1000:1200] = 255
    motion = detector.update(frame)
    assert motion.moving and (motion.regions >= 0).all() and (motion.regions <= 1).all()
    assert np.any(motion.regions[:, 0] > 0.7), motion.regions


@pytest.mark.parametrize(
    "settings", [{"threshold": 0}, {"threshold": 256}, {"lightning_threshold": 0}, {"frame_height": 10}]
)
def test_invalid_settings_are_refused(settings: dict) -> None:
    with pytest.raises(ValueError):
        MotionSettings(**settings)


def test_the_gate_schedule() -> None:
    gate = DetectionGate(refresh_s=5.0, idle_s=30.0)
    # (time, moving, tracking, a tracked object missing) -> detector runs?
    table = [
        (0.0, False, False, False, True),  # the first frame
        (1.0, False, False, False, False),
        (2.0, True, False, False, True),  # motion
        (2.1, False, False, False, False),  # motion stopped, nothing tracked: nothing to settle
        (3.0, True, True, False, True),
        (3.1, False, True, False, True),  # the first still frame after motion, objects tracked
        (3.2, False, True, False, False),
        (8.0, False, True, False, False),
        (8.1, False, True, False, True),  # refresh_s since the last detection, objects tracked
        (8.5, False, True, True, False),
        (8.6, False, True, True, True),  # CHECK_S after a detection that missed a tracked object
        (9.0, False, False, False, False),
        (38.5, False, False, False, False),
        (38.6, False, False, False, True),  # idle_s with nothing tracked
    ]
    decisions = [gate.should_detect(t, moving, tracking, missing) for t, moving, tracking, missing, _ in table]
    assert decisions == [expected for *_, expected in table]
    assert (gate.detected, gate.skipped) == (7, 7)


# downscale_gray: (image, frame_height, expected), small literal arrays where every output pixel is a block mean.
DOWNSCALES = [
    # 2x4 -> 1x2: factor 2, each output the mean of a 2x2 block.
    (np.array([[0, 4, 8, 8], [4, 8, 8, 8]], np.uint8), 1, np.array([[4, 8]], np.uint8)),
    # 4x2 -> 2x1 by a factor of 2.
    (np.array([[10], [30], [50], [70]], np.uint8).repeat(2, 1), 2, np.array([[20], [60]], np.uint8)),
    # 4x6 -> 2x3: 2 divides both sides.
    (np.array([[0, 2, 4, 6, 8, 10]] * 2 + [[20] * 6] * 2, np.uint8), 2, np.array([[1, 5, 9], [20, 20, 20]], np.uint8)),
    # 3x3 -> 2x2: no whole blocks, a fractional area mean (each output pixel covers 1.5x1.5 input pixels).
    (np.array([[0, 0, 90], [0, 0, 90], [90, 90, 90]], np.uint8), 2, np.array([[0, 60], [60, 80]], np.uint8)),
    # Never enlarged: a frame lower than frame_height comes back as it is.
    (np.array([[1, 2], [3, 4]], np.uint8), 100, np.array([[1, 2], [3, 4]], np.uint8)),
]


@pytest.mark.parametrize(("image", "frame_height", "expected"), DOWNSCALES)
def test_downscale_gray_is_the_mean_of_each_block(image: np.ndarray, frame_height: int, expected: np.ndarray) -> None:
    assert np.array_equal(downscale_gray(image, frame_height), expected)


def test_downscale_gray_of_a_colour_frame_is_grayscale_at_the_asked_height() -> None:
    colour = np.zeros((6, 6, 3), np.uint8)
    colour[..., 1] = 200  # pure green: OpenCV's grayscale weighs green 0.587
    small = downscale_gray(colour, 3)
    assert small.shape == (3, 3) and (small == 117).all(), small


@pytest.mark.parametrize(
    ("hw", "frame_height", "shape"), [((480, 640), 100, (100, 133)), ((720, 1280), 100, (100, 178))]
)
def test_downscale_gray_keeps_the_aspect_and_matches_a_direct_area_shrink(
    hw: tuple[int, int], frame_height: int, shape: tuple[int, int]
) -> None:
    import cv2

    image = textured(*hw, seed=3)
    small = downscale_gray(image, frame_height)
    assert small.shape == shape
    direct = cv2.cvtColor(cv2.resize(image, shape[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    # Where block edges and the texture's 8-pixel cells do not line up (720p: blocks of 5), the fractional step
    # mixes block means, a little softer than the direct shrink; after the motion stage's blur they agree.
    blurred = [cv2.GaussianBlur(x, (5, 5), 0).astype(int) for x in (small, direct)]
    assert np.abs(blurred[0] - blurred[1]).max() <= 6 and np.abs(blurred[0] - blurred[1]).mean() < 1


# block_factor: (height, width, most, factor)
BLOCK_FACTORS = [
    (480, 640, 4.8, 4),
    (720, 1280, 7.2, 5),
    (1080, 1920, 10.8, 10),
    (240, 320, 2.4, 2),
    (101, 640, 1.01, 1),
]


@pytest.mark.parametrize(("height", "width", "most", "factor"), BLOCK_FACTORS)
def test_block_factor_divides_both_sides(height: int, width: int, most: float, factor: int) -> None:
    assert block_factor(height, width, most) == factor


def square_at(scene: np.ndarray, x: int, y: int = 300, side: int = 60) -> np.ndarray:
    """A light square on the scene, left edge at x."""
    frame = scene.copy()
    frame[y : y + side, x : x + side] = 250
    return frame


def test_the_region_of_a_moving_object_is_where_it_is_now_not_its_trail() -> None:
    """The slow background keeps a ghost of where an object spent a few frames; regions (what motion regions
    crop) leave most of it out (137 px of trail behind this square without, 61 with)."""
    detector, scene = MotionDetector(MotionSettings()), textured(1080, 1920)
    detector.update(scene)
    for step in range(40):
        motion = detector.update(square_at(scene, 100 + 12 * step, side=100))  # 8 frames on each place
    assert motion.moving
    x = 100 + 12 * 39
    (region,) = motion.regions * [1920, 1080, 1920, 1080]
    assert region[0] <= x and region[2] >= x + 100, "the square is inside its region"
    assert region[0] >= x - 80, f"the trail is left out: {region}"


def test_the_ghost_of_an_object_in_the_first_frame_is_gone_in_a_second() -> None:
    """The background is learnt from the first frame, object and all; when it leaves, the empty place differs
    from the background until learnt again, and is no region after about 7 frames."""
    detector, scene = MotionDetector(MotionSettings()), textured(1080, 1920)
    detector.update(square_at(scene, 900))
    ghosts = []
    for _ in range(15):
        regions = detector.update(scene).regions * [1920, 1080, 1920, 1080]
        ghosts.append(any(r[0] <= 930 <= r[2] and r[1] <= 330 <= r[3] for r in regions))
    assert ghosts[0], "at first the empty place is a change"
    assert not any(ghosts[10:]), ghosts
