"""Motion on a downscaled grayscale frame against a running-average background, and the detection gate.

On a Pi's CPU the model costs tens to hundreds of milliseconds a frame; this costs one or two. A
camera watching an empty yard then runs the detector only when something moves, plus the refreshes
of DetectionGate, instead of all day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Weight of the newest frame in the background: at 10 fps the background follows a change of light
# within a few seconds, while a person crossing the frame stays foreground.
BACKGROUND_ALPHA = 0.05
# A second background that follows within a few frames: where the frame differs from it, something is
# changing now. Behind a fast object the slow background keeps its ghost for seconds; this one does not.
RECENT_ALPHA = 0.5
# Where the frame differs from the background but has stopped changing (the ghost of an object that left,
# or the background learnt with an object in it at start), the background learns this much faster: the
# ghost is gone in about 7 frames instead of 30, and draws no crop for motion regions meanwhile.
SETTLED_ALPHA = 0.2
BLUR_KERNEL = (5, 5)  # sensor noise on the downscaled frame
DILATE_ITERATIONS = 2  # join the pieces of one moving object into one region


@dataclass(frozen=True)
class MotionSettings:
    threshold: int = 30
    contour_area: int = 10
    frame_height: int = 100
    lightning_threshold: float = 0.8

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= 255:
            raise ValueError(f"threshold must be 1..255, not {self.threshold}")
        if self.contour_area < 1 or self.frame_height < 20 or not 0 < self.lightning_threshold <= 1:
            raise ValueError(f"invalid motion settings: {self}")


@dataclass(frozen=True)
class Motion:
    """moving: the detector should look. changed: share of the downscaled frame that changed.
    regions: (K, 4) read-only float32 boxes of the moving regions, 0..1 of the frame: of each changed area,
    the part changing now where there is one (not the ghost a fast object leaves in the background).
    relearned: a sudden change of most of the frame reset the background."""

    moving: bool
    changed: float
    regions: np.ndarray
    relearned: bool


_NO_REGIONS = np.zeros((0, 4), np.float32)
_NO_REGIONS.flags.writeable = False


class MotionDetector:
    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        self._background: np.ndarray | None = None
        self._recent: np.ndarray | None = None
        self._kernel = np.ones((3, 3), np.uint8)

    def update(self, image_bgr: np.ndarray) -> Motion:
        small = self._prepare(image_bgr)
        if self._background is None or self._recent is None or self._background.shape != small.shape:
            self._background, self._recent = small.astype(np.float32), small.astype(np.float32)
            return Motion(True, 1.0, _full_frame(), False)  # nothing known yet: let the detector look
        diff = cv2.absdiff(small, cv2.convertScaleAbs(self._background))
        _, mask = cv2.threshold(diff, self.settings.threshold, 255, cv2.THRESH_BINARY)
        changed = cv2.countNonZero(mask) / mask.size
        if changed >= self.settings.lightning_threshold:
            # Lights on, the IR filter switching: everything changed at once, which is not an object.
            self._background, self._recent = small.astype(np.float32), small.astype(np.float32)
            return Motion(False, changed, _NO_REGIONS, True)
        recent = cv2.absdiff(small, cv2.convertScaleAbs(self._recent))
        _, fresh = cv2.threshold(recent, self.settings.threshold, 255, cv2.THRESH_BINARY)
        cv2.accumulateWeighted(small, self._background, BACKGROUND_ALPHA)
        settled = cv2.bitwise_and(mask, cv2.bitwise_not(fresh))
        cv2.accumulateWeighted(small, self._background, SETTLED_ALPHA, mask=settled)
        cv2.accumulateWeighted(small, self._recent, RECENT_ALPHA)
        mask = cv2.dilate(mask, self._kernel, iterations=DILATE_ITERATIONS)
        fresh = cv2.dilate(fresh, self._kernel, iterations=DILATE_ITERATIONS)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        h, w = small.shape
        boxes = [
            (x / w, y / h, (x + bw) / w, (y + bh) / h)
            for contour in contours
            if cv2.contourArea(contour) >= self.settings.contour_area
            for x, y, bw, bh in [_changing_now(cv2.boundingRect(contour), fresh)]
        ]
        if not boxes:
            return Motion(False, changed, _NO_REGIONS, False)
        regions = np.array(boxes, np.float32)
        regions.flags.writeable = False
        return Motion(True, changed, regions, False)

    def _prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(downscale_gray(image_bgr, self.settings.frame_height), BLUR_KERNEL, 0)


def _changing_now(rect: tuple[int, int, int, int], fresh: np.ndarray) -> tuple[int, int, int, int]:
    """The part of a changed area (x, y, w, h) that is changing now; all of it when none is (a slow object
    changes little from one frame to the next, and its ghost is short anyway)."""
    x, y, bw, bh = rect
    found = cv2.findNonZero(fresh[y : y + bh, x : x + bw])
    if found is None:
        return rect
    fx, fy, fw, fh = cv2.boundingRect(found)
    return x + fx, y + fy, fw, fh


def downscale_gray(image: np.ndarray, frame_height: int) -> np.ndarray:
    """The frame as grayscale, `frame_height` rows high (never enlarged), each pixel about the mean of the
    area it covers.

    This runs on every frame, most of them skipped by the gate, so it is built for speed: grayscale first (a third
    of the data to shrink), then a mean over whole blocks of an integer factor that divides both sides (OpenCV's
    INTER_AREA has a fast path for that: about 0.1 ms for 640x480 against 0.8 ms for a direct colour shrink by
    4.8), and only the rest, by less than the next such factor on a small image, is a fractional INTER_AREA
    (a little softer than one direct shrink where blocks straddle an edge; the blur that follows evens that out).
    """
    height, width = image.shape[:2]
    target_h = min(frame_height, height)
    size = (max(1, round(width * target_h / height)), target_h)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    factor = block_factor(height, width, height / target_h)
    if factor > 1:
        gray = cv2.resize(gray, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    if gray.shape[:2] != (size[1], size[0]):
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


def block_factor(height: int, width: int, most: float) -> int:
    """The largest integer that divides both sides and is at most `most` (1 when none does)."""
    common = math.gcd(height, width)
    return max((f for f in range(1, int(most) + 1) if common % f == 0), default=1)


def _full_frame() -> np.ndarray:
    box = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
    box.flags.writeable = False
    return box


# While a tracked object is missing, the detector looks again this soon: it is either gone (and its
# track should end now, not a refresh later) or was missed once (and is found again).
CHECK_S = 0.5


class DetectionGate:
    """When the detector runs: on motion; while objects are tracked at least every refresh_s (a parked car
    stays tracked); with nothing tracked at least every idle_s; and on the first frame. With objects
    tracked, also on the first still frame after motion (did the object leave, or stop?), and every
    CHECK_S while one of them is missing."""

    def __init__(self, refresh_s: float, idle_s: float) -> None:
        if refresh_s <= 0 or idle_s <= 0:
            raise ValueError(f"refresh_s and idle_s must be > 0, not {refresh_s}, {idle_s}")
        self.refresh_s, self.idle_s = refresh_s, idle_s
        self._last_detect: float | None = None
        self._was_moving = False
        self.detected = 0
        self.skipped = 0

    def should_detect(self, now_mono: float, moving: bool, tracking: bool, missing: bool = False) -> bool:
        """Decide for one frame, and count it; a True answer counts as the detector having run.
        missing: a tracked object was not found by the last detection."""
        due = self.refresh_s if tracking else self.idle_s
        if tracking and missing:
            due = min(due, CHECK_S)
        settled = tracking and self._was_moving and not moving
        self._was_moving = moving
        run = moving or settled or self._last_detect is None or now_mono - self._last_detect >= due
        if run:
            self._last_detect = now_mono
            self.detected += 1
        else:
            self.skipped += 1
        return run
