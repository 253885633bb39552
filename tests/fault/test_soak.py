"""A soak: 20 000 frames through the agent as a user runs it, on a 320x320 model, watched from outside.

The agent process runs the fixture model converted at 320 (INT8, the faster precision on this
host, one inference thread) on a 320x240 video of the fixture's shapes in a loop, as fast as it
goes, publishing detections, events and stats to a real Mosquitto. Inference is nearly all of
its time (about 9 ms a frame here), so the soak takes about 3 minutes (20 000 frames: 17 000 after the warm-up,
enough to show a drift of 5 MB per 10 000 frames and short enough for the suite).

Every half second the test reads the agent's resident memory, open file descriptors and threads
from /proc. After a warm-up (the onnxruntime arena and the caches of SQLite and paho fill up in
the first frames) none of them may grow: resident memory by less than MAX_RSS_DRIFT_MB,
descriptors and threads not at all.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from converter.cli import main as convert
from tests.agent.agent_process import (
    PREFIX,
    AgentProcess,
    Observer,
    agent_env,
    broker_args,
    distinct_events,
    outbox_events,
)
from tests.broker import Broker
from tests.fault.processes import ProcessFigures

DEVICE = "fault-soak"
SOAK_FRAMES = 20_000
WARM_UP_FRAMES = 3_000  # figures from here on are the baseline
WINDOW_FRAMES = 2_000  # the baseline and the end are each the samples over this many frames
MAX_RSS_DRIFT_MB = 5.0
SAMPLE_EVERY_S = 0.5
STATS_INTERVAL_S = 2
TIMEOUT_S = 600  # 20 000 frames take about 3 minutes here; a hung agent fails this test, not the suite


@pytest.fixture(scope="module")
def soak_bundle(tmp_path_factory: pytest.TempPathFactory, fixture_weights: Path, shapes_dataset: Path) -> Path:
    """The fixture model converted at 320 whatever size it was trained at, FP32 and INT8."""
    out = tmp_path_factory.mktemp("soak") / "shapes320"
    # Accuracy is not what this bundle is for: --max-map-drop 100 keeps its INT8 model deployable.
    args = [fixture_weights, "--out", out, "--calib", shapes_dataset, "--imgsz", "320"]
    args += ["--calib-size", "32", "--val-size", "20", "--max-map-drop", "100"]
    assert convert([str(a) for a in args]) == 0
    return out


@pytest.fixture(scope="module")
def soak_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample video's scene at 320x240: the cheapest frames to decode, and no resize before the model."""
    from benchmarks.fixture.video import write_shapes_video

    path = tmp_path_factory.mktemp("soak-video") / "shapes-320x240.avi"
    write_shapes_video(path, frames=90, height=240, width=320)
    return path


@dataclass(frozen=True)
class Sample:
    """One look at the agent: frames processed by then (from its latest stats) and its /proc figures."""

    frames: int
    figures: ProcessFigures


def latest_frames(observer: Observer) -> int:
    stats = observer.on_topic(f"{PREFIX}/{DEVICE}/stats")
    return stats[-1].json()["frames"]["processed"] if stats else 0


def watch(agent: AgentProcess, observer: Observer) -> list[Sample]:
    """Sample the agent every SAMPLE_EVERY_S until it exits."""
    samples: list[Sample] = []
    deadline = time.monotonic() + TIMEOUT_S
    while agent.running:
        assert time.monotonic() < deadline, f"the soak did not end within {TIMEOUT_S} s: {agent.describe()}"
        try:
            samples.append(Sample(latest_frames(observer), ProcessFigures.of(agent.process.pid)))
        except OSError:
            break  # it exited between the check and the read
        time.sleep(SAMPLE_EVERY_S)
    return samples


def most_common(values: list[int]) -> int:
    return Counter(values).most_common(1)[0][0]


@pytest.mark.fault
def test_20000_frames_leak_no_memory_descriptors_or_threads(
    tmp_path: Path,
    broker: Broker,
    observe: Callable[..., Observer],
    soak_bundle: Path,
    soak_video: Path,
) -> None:
    # Events, stats and status only: a detections message per frame would load this process, not the agent.
    observer = observe(broker, DEVICE, names=("events", "stats", "status"))
    args = ["run", "--source", str(soak_video), "--loop", "--model", str(soak_bundle), "--precision", "int8"]
    args += ["--max-frames", str(SOAK_FRAMES), *broker_args(broker.host, broker.port, DEVICE)]
    env = agent_env(tmp_path / "state", stats_interval=STATS_INTERVAL_S)
    started = time.monotonic()
    with AgentProcess(args, env, tmp_path) as agent:
        samples = watch(agent, observer)
        code = agent.wait(10)
        log = agent.stderr
    took = time.monotonic() - started
    assert code == 0, log[-3000:]
    assert f"stopped after {SOAK_FRAMES} frames" in log

    warm = [s.figures for s in samples if WARM_UP_FRAMES <= s.frames < WARM_UP_FRAMES + WINDOW_FRAMES]
    end = [s.figures for s in samples if s.frames >= SOAK_FRAMES - WINDOW_FRAMES]
    assert len(warm) >= 5 and len(end) >= 5, f"too few samples: {len(warm)} after the warm-up, {len(end)} at the end"
    warm_rss = statistics.median(f.rss_kb for f in warm) / 1024
    end_rss = statistics.median(f.rss_kb for f in end) / 1024
    fds = (most_common([f.fds for f in warm]), most_common([f.fds for f in end]))
    threads = (most_common([f.threads for f in warm]), most_common([f.threads for f in end]))
    cpu_ms = samples[-1].figures.cpu_s / max(samples[-1].frames, 1) * 1e3
    print(
        f"soak: {SOAK_FRAMES} frames in {took:.0f} s ({SOAK_FRAMES / took:.0f} fps, agent CPU {cpu_ms:.1f} ms/frame); "
        f"RSS {warm_rss:.1f} MB after {WARM_UP_FRAMES} frames -> {end_rss:.1f} MB at the end "
        f"(drift {end_rss - warm_rss:+.2f} MB, peak {max(s.figures.rss_kb for s in samples) / 1024:.1f} MB); "
        f"fds {fds[0]} -> {fds[1]}; threads {threads[0]} -> {threads[1]}"
    )
    assert end_rss - warm_rss < MAX_RSS_DRIFT_MB
    assert fds[1] <= fds[0], f"file descriptors grew: {fds}"
    assert threads[1] <= threads[0], f"threads grew: {threads}"

    stats = [m.json() for m in observer.on_topic(f"{PREFIX}/{DEVICE}/stats")]
    assert stats[-1]["frames"]["processed"] == SOAK_FRAMES and stats[-1]["frames"]["stale"] == 0
    assert stats[-1]["mqtt"]["outbox_errors"] == 0
    events = distinct_events(observer.on_topic(f"{PREFIX}/{DEVICE}/events"))
    assert events, "the looping video keeps starting and ending presences"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "no event lost over the soak"
    assert outbox_events(tmp_path / "state") == []
