"""MotionDetector on synthetic frames and DetectionGate on a table of moments."""

from __future__ import annotations

import numpy as np
import pytest

from agent.scene.motion import DetectionGate, MotionDetector, MotionSettings


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
    # (time, moving, tracking) -> detector runs?
    table = [
        (0.0, False, False, True),  # the first frame
        (1.0, False, False, False),
        (2.0, True, False, True),  # motion
        (3.0, False, True, False),
        (7.0, False, True, True),  # refresh_s since the last detection, objects tracked
        (8.0, False, False, False),
        (36.9, False, False, False),
        (37.0, False, False, True),  # idle_s with nothing tracked
    ]
    decisions = [gate.should_detect(t, moving, tracking) for t, moving, tracking, _ in table]
    assert decisions == [expected for *_, expected in table]
    assert (gate.detected, gate.skipped) == (4, 4)
