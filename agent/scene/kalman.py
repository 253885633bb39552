"""A constant-velocity Kalman filter on one box: centre, width and height, and their rates per second.

Time steps are the seconds between detector frames, not frame counts: with motion gating those
gaps vary from a frame period to `[motion] refresh_s`, and a velocity in pixels per second stays
meaningful across them.
"""

from __future__ import annotations

import numpy as np

# Noise scaled by the box's size, as SORT-like trackers do: a big near object jitters more in
# pixels than a small far one. Position noise per measurement, velocity noise per second.
MEASUREMENT_NOISE = 0.05
PROCESS_POSITION_NOISE = 0.05
PROCESS_VELOCITY_NOISE = 0.1
# A predicted size never shrinks below this many pixels (a filter running on without measurements
# could otherwise take a box to zero or below).
MIN_SIZE = 1.0

_H = np.hstack([np.eye(4), np.zeros((4, 4))])  # we measure cx, cy, w, h


def to_cxcywh(box_xyxy: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], np.float64)


def to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = cxcywh[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


class BoxFilter:
    """State [cx, cy, w, h, vcx, vcy, vw, vh] with its covariance."""

    def __init__(self, box_xyxy: np.ndarray) -> None:
        measured = to_cxcywh(box_xyxy)
        self.x = np.concatenate([measured, np.zeros(4)])
        scale = max(measured[2], measured[3], MIN_SIZE)
        self.p = np.diag([scale**2 * 0.01] * 4 + [scale**2] * 4)  # the velocity is unknown at first

    @property
    def box(self) -> np.ndarray:
        return to_xyxy(self.x)

    def predict(self, dt: float) -> np.ndarray:
        """Advance by `dt` seconds; the predicted box (xyxy)."""
        if dt > 0:
            f = np.eye(8)
            f[:4, 4:] = np.eye(4) * dt
            scale = max(self.x[2], self.x[3], MIN_SIZE)
            q = np.diag(
                [(PROCESS_POSITION_NOISE * scale) ** 2 * dt] * 4 + [(PROCESS_VELOCITY_NOISE * scale) ** 2 * dt] * 4
            )
            self.x = f @ self.x
            self.p = f @ self.p @ f.T + q
            self.x[2:4] = np.maximum(self.x[2:4], MIN_SIZE)
        return self.box

    def correct(self, box_xyxy: np.ndarray) -> None:
        measured = to_cxcywh(box_xyxy)
        scale = max(measured[2], measured[3], MIN_SIZE)
        r = np.eye(4) * (MEASUREMENT_NOISE * scale) ** 2
        s = _H @ self.p @ _H.T + r
        gain = self.p @ _H.T @ np.linalg.inv(s)
        self.x = self.x + gain @ (measured - _H @ self.x)
        self.p = (np.eye(8) - gain @ _H) @ self.p
        self.x[2:4] = np.maximum(self.x[2:4], MIN_SIZE)
