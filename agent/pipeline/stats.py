"""Per-stage latency and frame counters over a stats window."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from agent.pipeline.results import STAGES, StageTimings

# Bounded memory for very long windows: at 30 fps a 60 s window fits.
MAX_SAMPLES = 4096


@dataclass
class FrameCounters:
    """Counts since start: processed frames, frames dropped by the source, frames too old to process."""

    processed: int = 0
    dropped: int = 0
    stale: int = 0


@dataclass
class StatsWindow:
    """Latency samples (ms) since the last report; `summary` empties it."""

    started_mono: float = field(default_factory=time.monotonic)
    _samples: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    _frames: int = 0
    _last_figures: dict[str, object] | None = None  # the last summary that covered frames
    _last_figures_end: float = 0.0

    def add(self, timings: StageTimings) -> None:
        self._frames += 1
        if len(self._samples["total"]) >= MAX_SAMPLES:
            return
        for stage in STAGES:
            self._samples[stage].append(getattr(timings, stage))

    def add_skipped(self, motion_ms: float) -> None:
        """A frame the motion gate kept from the detector: it counts in fps, and its motion stage is timed."""
        self._frames += 1
        if len(self._samples["motion"]) < MAX_SAMPLES:
            self._samples["motion"].append(motion_ms)

    def summary(self, now_mono: float | None = None, final: bool = False) -> dict[str, object]:
        """fps over the window and p50 / p95 / max per stage (ms); resets the window.

        final: the last summary of a run, which stays retained. If its window saw no frame (a
        periodic summary went out just before the stop), it repeats the last window that did, with
        `figures_age_s` saying how long ago that window ended, rather than leaving 0 fps behind.
        """
        now_mono = time.monotonic() if now_mono is None else now_mono
        if final and self._frames == 0 and self._last_figures is not None:
            return {**self._last_figures, "figures_age_s": round(now_mono - self._last_figures_end, 2)}
        elapsed = max(now_mono - self.started_mono, 1e-9)
        latency = {}
        for stage, values in self._samples.items():
            if values:
                array = np.asarray(values)
                p50, p95 = np.percentile(array, [50, 95])
                latency[stage] = {
                    "p50": round(float(p50), 2),
                    "p95": round(float(p95), 2),
                    "max": round(float(array.max()), 2),
                }
        summary = {"fps": round(self._frames / elapsed, 2), "window_s": round(elapsed, 2), "latency_ms": latency}
        if self._frames:
            self._last_figures, self._last_figures_end = summary, now_mono
        self.started_mono = now_mono
        self._frames = 0
        self._samples = {stage: [] for stage in STAGES}
        return summary
