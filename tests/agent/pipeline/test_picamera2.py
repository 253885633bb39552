"""The Pi CSI camera source, 'picamera2' or 'picamera2:N' (N = 1: a Pi 5's second camera), without a Pi.

Picamera2 comes from apt on a Pi alone, so the capture is handed a stand-in for the module (it takes
the module as an argument, as it does the real one). What is checked is ours: which camera number
reaches Picamera2, what a camera that is not attached becomes, and how a wrong uri is refused.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from agent.pipeline.capture import CaptureUnavailable, SourceError, _Picamera2Capture, resolve

ATTACHED = 2  # cameras 0 and 1, as on a Pi 5 with both CSI ports used


class StandInPicamera2:
    """Picamera2's calls the capture makes; each camera's frames are filled with its number."""

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= ATTACHED:
            raise IndexError("list index out of range")  # what Picamera2(n) raises past the last camera
        self.camera_num = camera_num

    def create_video_configuration(self, **settings: Any) -> dict[str, Any]:
        return settings

    def configure(self, config: dict[str, Any]) -> None:
        assert config["main"] == {"format": "RGB888"}

    def start(self) -> None:
        pass

    def capture_array(self, name: str, wait: bool) -> str:
        return name

    def wait(self, job: str, timeout: float) -> np.ndarray:
        return np.full((4, 6, 3), self.camera_num, np.uint8)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


MODULE: Any = SimpleNamespace(Picamera2=StandInPicamera2)


@pytest.mark.parametrize("camera", [0, 1])
def test_the_camera_number_reaches_picamera2(camera: int) -> None:
    capture = _Picamera2Capture(MODULE, camera)
    assert capture.grab()
    ok, image = capture.retrieve()
    assert ok and image.shape == (4, 6, 3) and int(image.max()) == camera
    capture.release()


def test_a_camera_that_is_not_attached_is_unavailable_and_named() -> None:
    with pytest.raises(CaptureUnavailable, match=r"no usable camera 2 \(list index out of range\)"):
        _Picamera2Capture(MODULE, 2)


@pytest.mark.parametrize("uri", ["picamera2:x", "picamera2:", "picamera2:-1", "picamera2:123"])
def test_a_wrong_camera_number_is_one_line_naming_it(uri: str) -> None:
    with pytest.raises(SourceError) as error:
        resolve(uri)
    message = str(error.value)
    assert repr(uri) in message and "'picamera2:N'" in message and "\n" not in message


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="Picamera2 is installed here")
@pytest.mark.parametrize("uri", ["picamera2", "picamera2:1", " picamera2:0 "])
def test_picamera2_uris_are_taken_for_the_csi_camera(uri: str) -> None:
    """Here without Picamera2, a CSI camera's uri gets the install hint rather than 'not found'."""
    with pytest.raises(SourceError, match="python3-picamera2 with apt"):
        resolve(uri)
