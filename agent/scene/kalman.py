"""Constant-velocity Kalman filters for many boxes at once: centre, width and height, and their rates per second.

Time steps are the seconds between detector frames, not frame counts: with motion gating those
gaps vary from a frame period to `[motion] refresh_s`, and a velocity in pixels per second stays
meaningful across them.

Each of cx, cy, w and h is its own two-state filter (value and rate): the motion model moves each
coordinate by its own rate, and the noises are diagonal, so no correlation between coordinates
ever arises and the 8x8 covariance of a box is four independent 2x2 blocks. Held as arrays of
shape (tracks, 4), predicting and correcting every track is a handful of element-wise numpy
operations, with no matrix inverse and no loop over tracks.
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
# Starting variances, in units of the box's size squared: the position is the measurement, the
# velocity is unknown.
INITIAL_POSITION_VAR = 0.01
INITIAL_VELOCITY_VAR = 1.0


def to_cxcywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) float64 centre x, centre y, width, height."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    return np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)


def to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, centre y, width, height -> (N, 4) float32 xyxy."""
    half = cxcywh[:, 2:4] / 2
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1).astype(np.float32)


def _scale(cxcywh: np.ndarray) -> np.ndarray:
    """(N, 1): the larger side of each box, the unit its noises are measured in."""
    return np.maximum(np.maximum(cxcywh[:, 2], cxcywh[:, 3]), MIN_SIZE)[:, None]


class BoxFilters:
    """The filters of every track, row i for track i. x: values, v: rates per second; p_xx, p_xv,
    p_vv: each coordinate's covariance of value and rate. All (N, 4) float64."""

    def __init__(self) -> None:
        empty = np.zeros((0, 4))
        self.x, self.v, self.p_xx, self.p_xv, self.p_vv = (empty.copy() for _ in range(5))

    def __len__(self) -> int:
        return len(self.x)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 xyxy of the current estimates."""
        return to_xyxy(self.x)

    def add(self, boxes_xyxy: np.ndarray) -> None:
        """New rows for boxes first seen now, at rest as far as anyone knows."""
        measured = to_cxcywh(boxes_xyxy)
        scale2 = np.repeat(_scale(measured) ** 2, 4, axis=1)
        self.x = np.concatenate([self.x, measured])
        self.v = np.concatenate([self.v, np.zeros_like(measured)])
        self.p_xx = np.concatenate([self.p_xx, scale2 * INITIAL_POSITION_VAR])
        self.p_xv = np.concatenate([self.p_xv, np.zeros_like(measured)])
        self.p_vv = np.concatenate([self.p_vv, scale2 * INITIAL_VELOCITY_VAR])

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (a boolean mask or indices), in that order."""
        self.x, self.v, self.p_xx, self.p_xv, self.p_vv = (
            a[rows] for a in (self.x, self.v, self.p_xx, self.p_xv, self.p_vv)
        )

    def predict(self, dt: float) -> np.ndarray:
        """Advance every filter by `dt` seconds; the predicted boxes, (N, 4) float32 xyxy."""
        if dt > 0 and len(self.x):
            scale2 = _scale(self.x) ** 2
            self.x = self.x + self.v * dt
            self.x[:, 2:4] = np.maximum(self.x[:, 2:4], MIN_SIZE)
            # F P F^T + Q for F = [[1, dt], [0, 1]], block by block.
            self.p_xx = self.p_xx + dt * (2 * self.p_xv + dt * self.p_vv) + (PROCESS_POSITION_NOISE**2 * dt) * scale2
            self.p_xv = self.p_xv + dt * self.p_vv
            self.p_vv = self.p_vv + (PROCESS_VELOCITY_NOISE**2 * dt) * scale2
        return self.boxes

    def correct(self, rows: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        """Fold in one measured box for each of `rows` (indices, distinct)."""
        if not len(rows):
            return
        measured = to_cxcywh(boxes_xyxy)
        x, v, p_xx, p_xv, p_vv = self.x[rows], self.v[rows], self.p_xx[rows], self.p_xv[rows], self.p_vv[rows]
        innovation_var = p_xx + (MEASUREMENT_NOISE**2) * _scale(measured) ** 2
        gain_x, gain_v = p_xx / innovation_var, p_xv / innovation_var
        residual = measured - x
        x = x + gain_x * residual
        x[:, 2:4] = np.maximum(x[:, 2:4], MIN_SIZE)
        self.x[rows] = x
        self.v[rows] = v + gain_v * residual
        self.p_vv[rows] = p_vv - gain_v * p_xv
        self.p_xv[rows] = (1 - gain_x) * p_xv
        self.p_xx[rows] = (1 - gain_x) * p_xx
