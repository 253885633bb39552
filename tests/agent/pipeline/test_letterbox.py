import numpy as np
import pytest

from agent.pipeline.letterbox import Letterbox, boxes_to_input, boxes_to_source


@pytest.mark.parametrize(
    ("source_hw", "input_hw", "resized_wh", "pad_xy"),
    [
        ((480, 640), (640, 640), (640, 480), (0, 80)),
        ((640, 480), (640, 640), (480, 640), (80, 0)),
        ((240, 320), (320, 320), (320, 240), (0, 40)),
        ((100, 100), (320, 320), (320, 320), (0, 0)),
        ((1080, 1920), (384, 640), (640, 360), (0, 12)),
        ((301, 400), (320, 320), (320, 241), (0, 39)),  # odd padding: 79 splits 39 top / 40 bottom
    ],
)
def test_placement(source_hw, input_hw, resized_wh, pad_xy):
    transform = Letterbox(input_hw).transform_for(source_hw)
    assert transform.resized_wh == resized_wh
    assert (transform.pad_x, transform.pad_y) == pad_xy


def test_canvas_matches_ultralytics_letterbox():
    ultralytics_augment = pytest.importorskip("ultralytics.data.augment")
    rng = np.random.default_rng(0)
    for shape in [(301, 400, 3), (480, 640, 3), (500, 200, 3)]:
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        expected = ultralytics_augment.LetterBox((320, 320), auto=False, stride=32)(image=image)
        canvas, _ = Letterbox((320, 320)).canvas(image)
        np.testing.assert_array_equal(canvas, expected)


def test_tensor_is_rgb_scaled_nchw():
    image = np.zeros((320, 320, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    tensor, _ = Letterbox((320, 320))(image)
    assert tensor.shape == (1, 3, 320, 320) and tensor.dtype == np.float32
    assert tensor[0, 2].min() == 1.0 and tensor[0, 0].max() == 0.0


def test_canvas_padding_is_refreshed_when_aspect_changes():
    letterbox = Letterbox((320, 320))
    letterbox.canvas(np.full((320, 160, 3), 7, np.uint8))  # tall frame fills the middle columns
    canvas, _ = letterbox.canvas(np.full((160, 320, 3), 9, np.uint8))  # wide frame: those columns are padding now
    assert canvas[0, 160].tolist() == [114, 114, 114]
    assert canvas[160, 160].tolist() == [9, 9, 9]


@pytest.mark.parametrize("source_hw", [(480, 640), (640, 480), (301, 400), (1080, 1920)])
def test_box_round_trip(source_hw):
    transform = Letterbox((320, 320)).transform_for(source_hw)
    height, width = source_hw
    boxes = np.array([[0, 0, width, height], [10.5, 20.25, 100, 200], [width * 0.5, height * 0.5, width, height]])
    back = boxes_to_source(boxes_to_input(boxes, transform), transform)
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_boxes_are_clipped_to_the_source_frame():
    transform = Letterbox((320, 320)).transform_for((240, 320))
    back = boxes_to_source(np.array([[-50, 0, 400, 400]], np.float32), transform)
    np.testing.assert_allclose(back, [[0, 0, 320, 240]])
