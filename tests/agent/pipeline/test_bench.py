"""`yolo-edge-agent bench`: precisions take turns in blocks, each block opening with an untimed run."""

from __future__ import annotations

import numpy as np

from agent.pipeline.bench import timed_in_turns
from agent.pipeline.inference import TIMING_BLOCK_RUNS


class LoggingDetector:
    """Stands in for a Detector: logs each call, reports fixed stage times."""

    def __init__(self, name: str, log: list[str], inference_ms: float) -> None:
        self.name, self.log, self.inference_ms = name, log, inference_ms

    def detect(self, image: np.ndarray) -> tuple[object, float, float, float]:
        self.log.append(self.name)
        return None, 1.0, self.inference_ms, 0.5


def test_precisions_alternate_in_blocks_and_every_frame_is_timed_once_per_precision() -> None:
    calls: list[str] = []
    detectors = {"fp32": LoggingDetector("fp32", calls, 40.0), "int8": LoggingDetector("int8", calls, 20.0)}
    frames = [np.zeros((4, 4, 3), np.uint8)] * (2 * TIMING_BLOCK_RUNS + 1)
    rows = timed_in_turns(detectors, frames)  # type: ignore[arg-type]
    assert {name: len(r) for name, r in rows.items()} == {"fp32": len(frames), "int8": len(frames)}
    assert np.median(rows["int8"][:, 1]) == 20.0 and np.median(rows["fp32"][:, 1]) == 40.0
    block = ["fp32"] * (TIMING_BLOCK_RUNS + 1) + ["int8"] * (TIMING_BLOCK_RUNS + 1)
    assert calls[: 2 * len(block)] == block * 2, "not in blocks, or a block without its untimed run"
    assert calls[2 * len(block) :] == ["fp32", "fp32", "int8", "int8"], "the short last block"
