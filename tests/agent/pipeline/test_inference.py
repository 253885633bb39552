"""median_latencies_ms: models take turns in blocks, each block opening with an untimed run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.pipeline.inference import TIMING_BLOCK_RUNS, median_latencies_ms


class SleepingModel:
    """Stands in for an InferenceModel: run() takes `seconds` and is logged with the other models' calls."""

    def __init__(self, name: str, seconds: float, log: list[str]) -> None:
        self.name, self.seconds, self.log = name, seconds, log

    def run(self, tensor: np.ndarray) -> np.ndarray:
        self.log.append(self.name)
        time.sleep(self.seconds)
        return tensor


def test_blocks_alternate_and_every_model_gets_its_runs_plus_one_untimed_per_block() -> None:
    calls: list[str] = []
    models = {"slow": SleepingModel("slow", 0.004, calls), "fast": SleepingModel("fast", 0.001, calls)}
    runs = 2 * TIMING_BLOCK_RUNS + 1  # three blocks each, the last one short
    medians = median_latencies_ms(models, np.zeros(1, np.float32), runs)  # type: ignore[arg-type]
    assert set(medians) == {"slow", "fast"}
    assert medians["slow"] >= 4.0 and medians["fast"] >= 1.0 and medians["slow"] > medians["fast"] + 1.5, medians
    assert calls.count("slow") == calls.count("fast") == runs + 3
    blocks = [name for index, name in enumerate(calls) if index == 0 or calls[index - 1] != name]
    assert blocks == ["slow", "fast"] * 3, "whole blocks, taking turns"
    assert calls[: TIMING_BLOCK_RUNS + 1] == ["slow"] * (TIMING_BLOCK_RUNS + 1)


def test_at_least_one_run_is_asked_for() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        median_latencies_ms({}, np.zeros(1, np.float32), 0)
