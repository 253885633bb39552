"""Frames as sources deliver them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured image.

    image: (H, W, 3) uint8 BGR. frame_id: counts up from 1 per source.
    captured_at: time.time() at capture (Unix seconds, for payloads).
    captured_mono: time.monotonic() at capture (seconds, for ages and latency).
    """

    image: np.ndarray
    frame_id: int
    captured_at: float
    captured_mono: float

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
