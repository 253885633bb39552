"""JSON payloads of the MQTT contract (docs/topics.md): compact UTF-8, Unix-second times, normalized boxes."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from agent.pipeline.results import FrameResult
from agent.scene.presence import PresenceEvent


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def detections_payload(result: FrameResult, names: Mapping[int, str], model: Mapping[str, str]) -> bytes:
    """One frame: boxes as [x1, y1, x2, y2] in 0..1 of the source frame."""
    height, width = result.source_hw
    detections = result.detections
    # float64 before rounding: rounded float32 values print as 0.16879999637...
    scale = np.array([width, height, width, height], np.float64)
    boxes = np.round(detections.boxes_xyxy.astype(np.float64) / scale, 4)
    items = [
        {
            "label": names.get(int(class_id), str(int(class_id))),
            "class_id": int(class_id),
            "confidence": round(float(score), 4),
            "box": box.tolist(),
        }
        for box, score, class_id in zip(boxes, detections.scores, detections.class_ids, strict=True)
    ]
    timings = result.timings.as_dict()
    timings.pop("publish")  # not known until this very message is out
    return dumps(
        {
            "frame": result.frame_id,
            "ts": round(result.captured_at, 3),
            "source": {"width": width, "height": height},
            "model": dict(model),
            "latency_ms": timings,
            "detections": items,
        }
    )


def event_payload(event: PresenceEvent, seq: int) -> bytes:
    return dumps(
        {
            "seq": seq,
            "type": event.type,
            "label": event.label,
            "count": event.count,
            "max_confidence": event.max_confidence,
            "ts": round(event.ts, 3),
            "frame": event.frame,
        }
    )


def presence_payload(counts: Mapping[str, int], ts: float) -> bytes:
    """Retained `presence`: every label present now and its count; a label absent from `present` is absent."""
    return dumps({"ts": round(ts, 3), "present": dict(counts)})
