"""The model input is written without a canvas: it must hold exactly what the canvas would give."""

from __future__ import annotations

import numpy as np

from agent.pipeline.letterbox import UNIT_SCALE, Letterbox


def _through_canvas(image: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    canvas, _ = Letterbox(input_hw).canvas(image)
    return UNIT_SCALE[0][canvas[..., ::-1]].transpose(2, 0, 1)[None]


def test_tensor_equals_the_canvas_through_the_table_as_placements_change():
    rng = np.random.default_rng(1)
    letterbox = Letterbox((320, 320))
    # One instance across shapes: padding written for a wide frame must not survive into a tall one.
    for shape in [(240, 320, 3), (320, 160, 3), (1080, 1920, 3), (320, 320, 3), (301, 400, 3), (240, 320, 3)]:
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        tensor, transform = letterbox(image)
        np.testing.assert_array_equal(tensor, _through_canvas(image, (320, 320)))
        assert transform.source_hw == shape[:2]
