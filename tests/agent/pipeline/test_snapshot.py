"""Snapshots: scaling to the width cap, boxes drawn on a copy, JPEG that cv2 decodes.

The agent publishing them over a real broker is in tests/agent/control/test_remote_e2e.py.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.pipeline.detections import Detections
from agent.pipeline.snapshot import (
    PALETTE,
    ZONE_COLOR,
    SnapshotSettings,
    box_tag,
    draw_detections,
    draw_zones,
    scaled_to_width,
    snapshot_jpegs,
)

NAMES = {0: "circle", 1: "square"}


def scene(height: int = 480, width: int = 640) -> np.ndarray:
    """A grey frame with a dark rectangle, so a drawn box shows against it."""
    image = np.full((height, width, 3), 128, np.uint8)
    image[100:200, 150:300] = 40
    return image


def detections(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    """Rows of (x1, y1, x2, y2, score, class_id) in source pixels."""
    array = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(array[:, :4], array[:, 4], array[:, 5].astype(np.int64))


def decode(jpeg: bytes) -> np.ndarray:
    assert jpeg[:2] == b"\xff\xd8", "a JPEG starts with SOI"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


# (source (h, w), width cap, decoded (h, w))
SIZES = [
    ((480, 640), 640, (480, 640)),
    ((480, 640), 320, (240, 320)),
    ((1080, 1920), 640, (360, 640)),
    ((1080, 1920), 1000, (562, 1000)),
    ((240, 320), 640, (240, 320)),  # narrower frames are never enlarged
    ((1, 2000), 32, (1, 32)),  # a strip keeps at least one row
]


@pytest.mark.parametrize(("source_hw", "width", "expected_hw"), SIZES)
def test_snapshot_is_a_jpeg_of_at_most_the_configured_width(source_hw, width, expected_hw) -> None:
    image = scene(*source_hw) if source_hw[0] > 200 else np.full((*source_hw, 3), 90, np.uint8)
    jpeg = snapshot_jpegs(image, detections((10, 0, 50, 1, 0.9, 0)), NAMES, SnapshotSettings(width=width)).drawn
    assert decode(jpeg).shape == (*expected_hw, 3)


def test_the_source_frame_is_never_drawn_on() -> None:
    image = scene()
    before = image.copy()
    for width in (640, 320):  # the copy path and the resize path
        snapshot_jpegs(image, detections((150, 100, 300, 200, 0.9, 0)), NAMES, SnapshotSettings(width=width))
    assert np.array_equal(image, before)
    scaled, scale = scaled_to_width(image, 640)
    assert scale == 1.0 and scaled is not image and not np.shares_memory(scaled, image)


def test_boxes_and_labels_are_drawn_where_the_detections_are() -> None:
    image = scene()
    found = detections((150, 100, 300, 200, 0.87, 1))
    canvas, scale = scaled_to_width(image, 320)
    draw_detections(canvas, found, NAMES, scale)
    color = np.array(PALETTE[1], np.int16)
    # The box edges (source x 150 and 300, y 100 and 200) halved onto the 320-wide canvas.
    left_edge = canvas[55:95, 75].astype(np.int16)
    right_edge = canvas[55:95, 150].astype(np.int16)
    assert (np.abs(left_edge - color).max(axis=1) < 40).mean() > 0.8
    assert (np.abs(right_edge - color).max(axis=1) < 40).mean() > 0.8
    # The label tag sits just above the top edge, in the class color with white text.
    tag = canvas[35:49, 76:120].astype(np.int16)
    assert (np.abs(tag - color).max(axis=2) < 40).mean() > 0.3
    assert (tag.min(axis=2) > 200).any(), "white text"
    # Far from the box, nothing changed.
    assert np.array_equal(canvas[150:, 200:], cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)[150:, 200:])


def test_boxes_partly_outside_the_frame_and_empty_frames() -> None:
    image = scene()
    odd = detections((-50, -20, 100, 60, 0.5, 0), (600, 400, 900, 700, 0.4, 1), (10, 5, 40, 30, 0.3, 57))
    decode(snapshot_jpegs(image, odd, NAMES, SnapshotSettings(width=640)).drawn)  # an unknown class id is its number
    empty = decode(snapshot_jpegs(image, Detections.empty(), NAMES, SnapshotSettings(width=640, quality=100)).drawn)
    assert np.abs(empty.astype(np.int16) - image).max() < 16, "no detections: the frame itself"


def test_quality_trades_size() -> None:
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (5, 5), 0)
    empty = Detections.empty()
    sizes = [len(snapshot_jpegs(image, empty, NAMES, SnapshotSettings(640, q)).drawn) for q in (20, 80, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[2] / 2


def test_zone_outlines_are_drawn_where_the_polygon_is() -> None:
    image = np.full((240, 320, 3), 128, np.uint8)
    canvas = image.copy()
    # The left half, lower half of the frame.
    draw_zones(canvas, [("yard", ((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)))])
    color = np.array(ZONE_COLOR, np.int16)
    top_edge = canvas[120, 20:150].astype(np.int16)  # y = 0.5 * 239
    assert (np.abs(top_edge - color).max(axis=1) < 40).mean() > 0.8
    assert np.array_equal(canvas[:100, 200:], image[:100, 200:]), "drawn outside the zone's outline"


def test_the_track_id_joins_the_label_tag() -> None:
    found = detections((150, 100, 300, 200, 0.87, 1))
    plain, tracked = scene(), scene()
    draw_detections(plain, found, NAMES, 1.0)
    draw_detections(tracked, found, NAMES, 1.0, ("1733000000.123-abc123",))
    # The tag grows to the right with " #abc123"; the box itself is the same.
    assert not np.array_equal(plain[70:100, 230:330], tracked[70:100, 230:330])
    assert np.array_equal(plain[105:200, :], tracked[105:200, :])
    jpeg = snapshot_jpegs(scene(), found, NAMES, SnapshotSettings(), ("x",), [("yard", ((0, 0), (1, 0), (0, 1)))]).drawn
    assert decode(jpeg).shape == (480, 640, 3)


# (label, score as the detector gives it, track id, the tag): the one format, which the dashboard's page
# writes too (fleet/dashboard/js/format.js boxTag; tests/fleet/test_dashboard.py compares the two).
TAGS = [
    ("circle", 0.87, None, "circle 87%"),
    ("circle", np.float32(0.29), None, "circle 29%"),  # float32's 0.28999999 is 29, not 28
    ("square", 0.965, "1733000000.123-abc123", "square 97% #abc123"),  # half rounds up, as Math.round does
    ("square", 0.96449, "x", "square 96% #x"),
    ("star", 0.00004, None, "star 0%"),
    ("star", 1.0, "1.0-0", "star 100% #1.0-0"),
]


@pytest.mark.parametrize(("label", "score", "track_id", "expected"), TAGS)
def test_a_box_is_tagged_label_percent_and_the_end_of_its_track_id(label, score, track_id, expected) -> None:
    assert box_tag(label, score, track_id) == expected


def test_the_clean_picture_is_the_drawn_one_without_its_drawing() -> None:
    image = scene()
    found = detections((150, 100, 300, 200, 0.87, 1))
    zones = [("yard", ((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)))]
    pair = snapshot_jpegs(image, found, NAMES, SnapshotSettings(width=320, quality=100), ("t-abc123",), zones)
    drawn, clean = decode(pair.drawn), decode(pair.clean)
    expected = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)
    assert drawn.shape == clean.shape == expected.shape
    assert np.abs(clean.astype(np.int16) - expected).max() < 16, "nothing drawn on the clean one"
    assert np.abs(drawn.astype(np.int16) - expected).max() > 100, "the drawn one has its boxes"


def test_crops_are_outlined_only_when_asked_for() -> None:
    """[snapshot] draw_regions: where the detector looked (motion regions), scaled with the frame."""
    image = np.full((1080, 1920, 3), 40, np.uint8)
    crops = [(640, 320, 960, 640)]
    kwargs = {"track_ids": (), "zones": (), "crops": crops}
    shown = snapshot_jpegs(image, Detections.empty(), NAMES, SnapshotSettings(960, 95, draw_regions=True), **kwargs)
    hidden = snapshot_jpegs(image, Detections.empty(), NAMES, SnapshotSettings(960, 95), **kwargs)
    drawn = cv2.imdecode(np.frombuffer(shown.drawn, np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(np.frombuffer(hidden.drawn, np.uint8), cv2.IMREAD_COLOR)
    left_edge = drawn[170:310, 320].astype(int)  # the crop's left side at half scale: x 320, y 160..320
    assert (left_edge.mean(axis=1) > 120).all(), "a grey outline where the crop's edge is"
    assert plain[170:310, 320].mean() < 60 and drawn[400:500, 800].mean() < 60, "nothing elsewhere, or when off"
