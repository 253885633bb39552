"""The one value type for a frame's detections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _frozen(array: np.ndarray, dtype: type, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    array = np.asarray(array, dtype=dtype)
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        expected = "(N" + "".join(f", {d}" for d in shape_tail) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    array = array.copy() if array.flags.writeable and array.base is not None else array
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Detections:
    """Boxes, scores and class ids of one frame, as read-only numpy arrays.

    boxes_xyxy: (N, 4) float32, pixels of the source frame.
    scores: (N,) float32 in 0..1. class_ids: (N,) int64.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes_xyxy", _frozen(self.boxes_xyxy, np.float32, (4,), "boxes_xyxy"))
        object.__setattr__(self, "scores", _frozen(self.scores, np.float32, (), "scores"))
        object.__setattr__(self, "class_ids", _frozen(self.class_ids, np.int64, (), "class_ids"))
        n = len(self.boxes_xyxy)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise ValueError(
                f"boxes_xyxy, scores and class_ids must have the same length, got "
                f"{n}, {len(self.scores)}, {len(self.class_ids)}"
            )

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        """Select by boolean mask, index array or slice."""
        return Detections(self.boxes_xyxy[index], self.scores[index], self.class_ids[index])
