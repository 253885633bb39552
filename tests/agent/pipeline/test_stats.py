"""StatsWindow: figures over a window, and the last figures kept for a run's final, retained stats."""

from __future__ import annotations

from agent.pipeline.results import StageTimings
from agent.pipeline.stats import StatsWindow


def timings(total: float) -> StageTimings:
    return StageTimings(capture=1.0, preprocess=2.0, inference=total - 4.0, postprocess=1.0)


def test_a_window_reports_fps_and_percentiles_then_starts_empty() -> None:
    window = StatsWindow(started_mono=100.0)
    for total in (10.0, 20.0, 30.0, 40.0):
        window.add(timings(total))
    first = window.summary(now_mono=102.0)
    assert first["fps"] == 2.0
    assert first["latency_ms"]["inference"]["max"] == 36.0
    second = window.summary(now_mono=104.0)
    assert second["fps"] == 0.0 and second["latency_ms"] == {}
    assert "figures_age_s" not in second


def test_a_final_summary_over_an_empty_window_keeps_the_last_figures_and_says_how_old() -> None:
    window = StatsWindow(started_mono=0.0)
    for total in (10.0, 20.0):
        window.add(timings(total))
    periodic = window.summary(now_mono=10.0)
    final = window.summary(now_mono=10.5, final=True)
    assert final["fps"] == periodic["fps"] == 0.2
    assert final["latency_ms"] == periodic["latency_ms"] and final["latency_ms"]
    assert final["figures_age_s"] == 0.5


def test_a_final_summary_with_frames_is_its_own_window() -> None:
    window = StatsWindow(started_mono=0.0)
    window.add(timings(10.0))
    window.summary(now_mono=1.0)
    window.add(timings(50.0))
    final = window.summary(now_mono=2.0, final=True)
    assert final["latency_ms"]["inference"]["max"] == 46.0 and "figures_age_s" not in final


def test_a_run_that_never_saw_a_frame_ends_with_empty_figures() -> None:
    final = StatsWindow(started_mono=0.0).summary(now_mono=5.0, final=True)
    assert final["fps"] == 0.0 and final["latency_ms"] == {} and "figures_age_s" not in final
