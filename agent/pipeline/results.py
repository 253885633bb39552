"""One immutable result per processed frame: what the publishers receive."""

from __future__ import annotations

from dataclasses import dataclass

from agent.pipeline.detections import Detections

STAGES: tuple[str, ...] = (
    "capture",
    "motion",
    "preprocess",
    "inference",
    "postprocess",
    "tracking",
    "publish",
    "total",
)


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds per stage of one frame.

    capture: how old the frame was when the loop picked it up (time it sat
    between the camera and the model). motion: the motion gate's decision. tracking: tracker,
    zones and per-object events. total: capture time to published.
    """

    capture: float
    preprocess: float
    inference: float
    postprocess: float
    publish: float = 0.0
    motion: float = 0.0
    tracking: float = 0.0

    @property
    def total(self) -> float:
        stages = (self.capture, self.motion, self.preprocess, self.inference, self.postprocess, self.tracking)
        return sum(stages) + self.publish

    def as_dict(self) -> dict[str, float]:
        return {stage: round(getattr(self, stage), 3) for stage in STAGES}


@dataclass(frozen=True)
class FrameResult:
    """Detections of one frame with where and when it came from.

    captured_at: Unix seconds. source_hw: (height, width) pixels. Boxes in
    `detections` are source-frame pixels. track_ids and zones run beside the detections, one
    entry each (the confirmed track's id or None, the zones it stands in), or are empty when
    the frame was not tracked. crops: the squares of the frame the detector ran on, xyxy pixels, when it
    ran on crops (motion regions) rather than the whole frame alone.
    """

    frame_id: int
    captured_at: float
    source_hw: tuple[int, int]
    detections: Detections
    timings: StageTimings
    track_ids: tuple[str | None, ...] = ()
    zones: tuple[tuple[str, ...], ...] = ()
    crops: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.detections)
        for name in ("track_ids", "zones"):
            given = len(getattr(self, name))
            if given not in (0, n):
                raise ValueError(f"{name} has {given} entries for {n} detections")
