"""The motion benchmark's tables, Markdown and plot."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from agent.system.board import cpu_model
from benchmarks.fixture.still_video import StillScene
from benchmarks.motion_compare import Found, Observer, Stationary
from benchmarks.tables import Table, command_line, render_markdown, render_text


def _video_start(run: Any, observer: Observer) -> float:
    """Seconds from the child's start to its first stats message, which the loop sends as it starts: start-up."""
    stats = observer.stats(run.device)
    return stats[0][0] - run.started if stats else 0.0


def _cpu_at(run: Any, seconds: float) -> float:
    """CPU seconds the child had used at `seconds` after its start (the first sample at or after it)."""
    return next((cpu for t, cpu in run.samples if t >= seconds), run.cpu_s)


def _frames(run: Any, observer: Observer) -> dict[str, int]:
    last = observer.last_stats(run.device) or {}
    return last.get("frames", {})


def _stage_p50(run: Any, observer: Observer, stage: str) -> float | None:
    values = [s["latency_ms"][stage]["p50"] for _, s in observer.stats(run.device) if stage in s.get("latency_ms", {})]
    return statistics.median(values) if values else None


def per_frame_cpu(gated: Any, ungated: Any, observer: Observer) -> tuple[float, float | None]:
    """(ms of CPU per detector frame, ms per skipped frame), start-up taken off: the ungated run's CPU after its
    start-up over its frames, then what the gated run's skipped frames used beyond its detector frames."""
    u_frames, g_frames = _frames(ungated, observer), _frames(gated, observer)
    u_start = _cpu_at(ungated, _video_start(ungated, observer))
    g_start = _cpu_at(gated, _video_start(gated, observer))
    per_detect = (ungated.cpu_s - u_start) / max(1, u_frames.get("processed", 0))
    skipped = g_frames.get("motion_skipped", 0)
    if not skipped:
        return per_detect * 1e3, None
    rest = gated.cpu_s - g_start - g_frames.get("detected", 0) * per_detect
    return per_detect * 1e3, max(0.0, rest) / skipped * 1e3


def tables(
    scene: StillScene,
    results: dict[str, tuple[Any, Any, list[Found], dict[str, Stationary]]],
    observer: Observer,
    target: float,
    within_s: float,
) -> list[Table]:
    headline, rows, object_rows, cost_rows = [], [], [], []
    for model, (gated, ungated, found, kept) in results.items():
        ratio = gated.cpu_s / ungated.cpu_s
        missed = [f for f in found if f.missed]
        zones = [f for f in found if f.zones_differ]
        still = kept[gated.name]
        headline += [
            (
                f"gated / ungated agent CPU seconds, {model}",
                f"<= {target:.2f}x",
                f"{ratio:.3f}x",
                _ok(ratio <= target),
            ),
            (
                f"objects of the ungated run missed by the gated run, {model}",
                "0",
                f"{len(missed)} of {len(found)} (zones differ: {len(zones)})",
                _ok(not missed and not zones and bool(found)),
            ),
            (
                f"stationary object kept through its {scene.still.go_s - scene.still.stop_s:.0f} s still stretch, "
                f"{model} gated",
                "one id, no end or new",
                _stationary(still, scene.fps),
                _ok(still.kept),
            ),
        ]
        for run in (gated, ungated):
            frames = _frames(run, observer)
            detected = frames.get("detected", frames.get("processed", 0))
            share = detected / max(1, frames.get("processed", 0))
            motion = _stage_p50(run, observer, "motion")
            rows.append(
                (
                    run.name,
                    str(frames.get("processed", 0)),
                    str(detected),
                    f"{100 * share:.1f} %",
                    str(frames.get("dropped", 0) + frames.get("stale", 0)),
                    f"{run.cpu_s:.1f}",
                    f"{run.cpu_s / ungated.cpu_s:.3f}x",
                    f"{_video_start(run, observer):.1f}",
                    f"{motion:.2f}" if motion is not None else "-",
                    str(sum(m["type"] == "new" for m in observer.objects(run.device))),
                    _stationary(kept[run.name], scene.fps),
                )
            )
        for f in found:
            delay = (f.gated_frame - f.frame) / scene.fps if f.gated_frame is not None else None
            object_rows.append(
                (
                    model,
                    f.label,
                    f"{f.frame / scene.fps:.1f}",
                    f"{f.gated_frame / scene.fps:.1f}" if f.gated_frame is not None else "MISSED",
                    f"{delay:+.1f}" if delay is not None else "-",
                    ", ".join(f.entered) or "-",
                    ", ".join(f.gated_entered) or "-",
                )
            )
        per_detect, per_skip = per_frame_cpu(gated, ungated, observer)
        cost_rows.append((model, f"{per_detect:.2f}", f"{per_skip:.2f}" if per_skip is not None else "-"))
    return [
        Table("Targets", ("figure", "wanted", "measured", "result"), tuple(headline)),
        Table(
            "Runs (each its own agent process, all at once on the same video and threads)",
            (
                "run",
                "frames",
                "detector frames",
                "detector share",
                "dropped + stale",
                "CPU s",
                "CPU / ungated",
                "start-up s",
                "motion p50 ms",
                "objects new",
                "stationary object",
            ),
            tuple(rows),
            (
                "CPU s: the agent process's user + system time from start to exit (os.wait4), start-up included.",
                "motion p50 ms: the motion stage (downscale, grayscale, blur, background difference), median of the "
                "per-second stats windows' p50; ungated runs do not compute motion.",
                "dropped + stale: frames the paced source replaced before the loop took them, or too old to process.",
            ),
        ),
        Table(
            f"Objects: every `new` of the ungated run and the gated run's (same label, within {within_s} s)",
            (
                "model",
                "label",
                "ungated new at s",
                "gated new at s",
                "gated delay s",
                "zones entered, ungated",
                "gated",
            ),
            tuple(object_rows),
            ("Times are video time: the message's `frame` over the video's fps.",),
        ),
        Table(
            "CPU per frame, start-up taken off (ms)",
            ("model", "detector frame (ungated run)", "skipped frame (gated run)"),
            tuple(cost_rows),
            (
                "detector frame: the ungated run's CPU after its first stats message over its frames (decode, "
                "preprocess, inference, tracking, publishing). skipped frame: what the gated run used beyond its "
                "detector frames at that cost, over its skipped frames (decode, downscale, motion, the loop).",
            ),
        ),
    ]


def _ok(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def _stationary(still: Stationary, fps: float) -> str:
    if still.first_frame is None or still.last_frame is None:
        return "not tracked"
    span = f"{still.first_frame / fps:.1f}-{still.last_frame / fps:.1f} s"
    return f"{'kept, one id' if still.kept else f'{still.ids} id(s)'} ({span})"


def plot(path: Path, scene: StillScene, runs: list[Any], observer: Observer) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for run in runs:
        zero = _video_start(run, observer) + run.started
        stats = [
            (t - zero, s["frames"].get("detected", s["frames"]["processed"])) for t, s in observer.stats(run.device)
        ]
        if len(stats) >= 2:
            t, detected = np.array(stats).T
            top.step(t[1:], np.diff(detected) / np.maximum(np.diff(t), 1e-3), where="pre", label=run.name, lw=1)
        samples = np.array([(0.0, 0.0), *run.samples])
        offset = zero - run.started
        rate = np.diff(samples[:, 1]) / np.maximum(np.diff(samples[:, 0]), 1e-3) * 100
        bottom.step(samples[1:, 0] - offset, rate, where="pre", label=f"{run.name} ({run.cpu_s:.0f} s)", lw=1)
    for ax in (top, bottom):
        ax.axvspan(scene.still.stop_s, scene.still.go_s, color="0.9", zorder=0)
        ax.axvline(scene.jump_s, color="0.4", ls=":", lw=1)
        ax.grid(alpha=0.3)
    top.set_ylabel("detector runs per second")
    top.set_title(
        f"Motion gating on {scene.seconds:g} s at {scene.fps:g} fps (grey: the stationary object's still stretch; "
        f"dotted: light jump)\n{cpu_model()}",
        fontsize=9,
    )
    bottom.set_ylabel("agent CPU, % of one core")
    bottom.set_xlabel("video time, s (from each agent's first stats message)")
    top.legend(fontsize=8, loc="upper right")
    bottom.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    args: argparse.Namespace,
    argv: list[str],
    scene: StillScene,
    facts: dict[str, str],
    results: dict[str, tuple[Any, Any, list[Found], dict[str, Stationary]]],
    observer: Observer,
    target: float,
    within_s: float,
) -> None:
    facts = {
        "cpu": cpu_model(),
        **facts,
        "onnxruntime threads": str(args.threads),
        "video": f"640x480 MJPG, {scene.seconds:g} s at {scene.fps:g} fps ({scene.frames} frames), played at its fps",
        "zone": "lower_half (the lower half of the frame)",
    }
    all_tables = [Table("Machine and set-up", ("fact", "value"), tuple(facts.items()))]
    all_tables += tables(scene, results, observer, target, within_s)
    for table in all_tables:
        print(render_text(table))
    png, md = args.out / "motion_bench.png", args.out / "motion_bench.md"
    plot(png, scene, [run for gated, ungated, *_ in results.values() for run in (gated, ungated)], observer)
    still = scene.still
    text = [
        "# Motion gating",
        "",
        f"`{command_line('benchmarks.motion_bench', argv)}`",
        "",
        f"A generated {scene.seconds:g} s video (benchmarks/fixture/still_video.py): a still textured scene with "
        f"sensor noise and slow light drift, {len(scene.walkers) - 1} shapes crossing at different times, a "
        f"{still.label} that comes in, stands still from {still.stop_s:g} s to {still.go_s:g} s and leaves, and a "
        f"light jump at {scene.jump_s:g} s (every pixel brighter at once). The real agent plays it at its fps, "
        "gated (the defaults) and with `[motion] enabled = false`, every run at once, so load hits them alike.",
        "",
        f"![motion gating]({png.name})",
        "",
    ]
    md.write_text("\n".join(text + [render_markdown(t) for t in all_tables]))
    print(f"\nwrote {png} and {md}")
