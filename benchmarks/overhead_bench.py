"""Pipeline overhead: the agent's fps over the bare `session.run` loop, at every core and at cores - 1,
with onnxruntime's thread spinning on (its default, the agent's) and off, side by side in one run.

    python -m benchmarks.overhead_bench [--model FP32.onnx] [--frames 100] [--rounds 3] [--out DIR]

Bare: InferenceModel.run on preprocessed tensors, nothing else, its threads spinning between runs as
onnxruntime's default has them (the agent stops them between runs when they take every core, which
leaves the bare loop's speed as it was). Agent: AgentLoop in this process on a 640x480 MJPG video
(decoding in its reader thread, letterbox, postprocess, publishing to a publisher that discards),
motion gating and tracking off as in the agent_bench rows. Every configuration runs bare and agent
back to back in each round, configurations rotating from round to round; the ratio is the median of
the per-round ratios. Spinning off is set here by wrapping the agent's session options (the agent
itself keeps onnxruntime's default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.pipeline import inference
from agent.pipeline.inference import InferenceModel, default_threads
from benchmarks.agent_bench import WARMUP_FRAMES, machine_facts, preprocessed_tensors, run_agent_inprocess, worker_cmd
from benchmarks.fixture.video import write_shapes_video
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.9
INPUT_HW = (640, 640)


@dataclass(frozen=True)
class Config:
    threads: int
    spinning: bool

    @property
    def name(self) -> str:
        return f"{self.threads} thread{'s' if self.threads > 1 else ''}, spinning {'on' if self.spinning else 'off'}"


@contextmanager
def spinning(enabled: bool) -> Iterator[None]:
    """Sessions built inside get onnxruntime's intra-op spinning turned off unless `enabled`."""
    original = inference.session_options

    def without_spinning(threads: int, exact_int8: bool = False):  # type: ignore[no-untyped-def]
        options = original(threads, exact_int8)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    if not enabled:
        inference.session_options = without_spinning  # type: ignore[assignment]
    try:
        yield
    finally:
        inference.session_options = original  # type: ignore[assignment]


def run_bare(model: Path, tensors: list[np.ndarray], frames: int, threads: int) -> float:
    """Frames per second of InferenceModel.run alone, onnxruntime's threads spinning between runs."""
    bare = InferenceModel(model, threads, quiet_between_runs=False)
    for i in range(WARMUP_FRAMES):
        bare.run(tensors[i % len(tensors)])
    started = time.perf_counter()
    for i in range(frames):
        bare.run(tensors[i % len(tensors)])
    return frames / (time.perf_counter() - started)


def export_model(workdir: Path) -> Path:
    """An untrained yolo11n.yaml exported at 640 (agent_bench's own worker): the speed of the real architecture."""
    import subprocess

    out = workdir / "yolo11n-640.onnx"
    if not out.exists():
        cmd = worker_cmd("export", "-", INPUT_HW[0], workdir, out)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def plot(rows: dict[Config, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in rows]
    bare = [statistics.median(b for b, _ in runs) for runs in rows.values()]
    agent = [statistics.median(a for _, a in runs) for runs in rows.values()]
    y = range(len(names))
    figure, ax = plt.subplots(figsize=(8, 0.6 * len(names) + 1.4))
    ax.barh([i + 0.2 for i in y], bare, height=0.4, color="#9db4d6", label="bare session.run")
    ax.barh([i - 0.2 for i in y], agent, height=0.4, color="#2f5d9e", label="agent (AgentLoop)")
    for i, (b, a) in enumerate(zip(bare, agent, strict=True)):
        ax.text(a, i - 0.2, f" {a:.1f} fps, {a / b:.3f}x", va="center", fontsize=8)
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xlabel("frames per second (FP32, 640)")
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an FP32 .onnx at 640 (default: untrained yolo11n, exported)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.frames < 10 or args.rounds < 1:
        parser.error("--frames must be at least 10 and --rounds at least 1")
    cores = default_threads()
    thread_counts = [cores] + ([cores - 1] if cores > 1 else [])
    configs = [Config(t, s) for t in thread_counts for s in (True, False)]
    with tempfile.TemporaryDirectory(prefix="overhead-bench-") as scratch:
        workdir = Path(scratch)
        model = args.model or export_model(workdir)
        if not model.is_file():
            print(f"error: no model at {model}; pass an FP32 .onnx with --model", file=sys.stderr)
            return 2
        video = workdir / "overhead.avi"
        write_shapes_video(video, frames=args.frames + 30, height=480, width=640)
        tensors = preprocessed_tensors(video, INPUT_HW, 32)
        facts = machine_facts(cores)
        results: dict[Config, list[tuple[float, float]]] = {c: [] for c in configs}
        for round_index in range(args.rounds):
            shift = round_index % len(configs)
            for config in configs[shift:] + configs[:shift]:
                with spinning(config.spinning):
                    bare = run_bare(model, tensors, args.frames, config.threads)
                    agent = run_agent_inprocess(model, video, args.frames, config.threads).fps
                results[config].append((bare, agent))
                progress(
                    f"round {round_index + 1}/{args.rounds}, {config.name}: bare {bare:.2f}, agent {agent:.2f} fps"
                )
    rows, targets = [], []
    for config, runs in results.items():
        ratio = statistics.median(a / b for b, a in runs)
        rows.append(
            (
                config.name,
                f"{statistics.median(b for b, _ in runs):.2f}",
                f"{statistics.median(a for _, a in runs):.2f}",
                f"{ratio:.3f}x",
                " / ".join(f"{a / b:.3f}" for b, a in runs),
            )
        )
        if config.spinning:
            verdict = "pass" if ratio >= TARGET_RATIO else "FAIL"
            targets.append((f"agent fps / bare fps, {config.name}", f">= {TARGET_RATIO}x", f"{ratio:.3f}x", verdict))
    facts["model"] = str(args.model) if args.model else "yolo11n.yaml untrained, exported at 640, FP32"
    facts["load average at end"] = machine_facts(cores)["load average at start (1/5/15 min)"]
    out = [
        Table("Machine and set-up", ("fact", "value"), tuple(facts.items())),
        Table("Targets", ("figure", "wanted", "measured", "result"), tuple(targets)),
        Table(
            f"Agent against the bare loop, FP32 at 640, {args.frames} frames, median of {args.rounds} rounds",
            ("configuration", "bare fps", "agent fps", "agent / bare", "ratio per round"),
            tuple(rows),
            (
                "spinning: onnxruntime's intra-op threads spin between parallel sections instead of sleeping.",
                "cores - 1 leaves a core to the video decoder and the rest of the agent, as the README advises.",
            ),
        ),
    ]
    for table in out:
        print(render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "overhead_bench.png")
    command = command_line("benchmarks.overhead_bench", argv if argv is not None else sys.argv[1:])
    head = f"# Pipeline overhead\n\n`{command}`\n\n"
    body = "![overhead](overhead_bench.png)\n\n" + "\n".join(render_markdown(t) for t in out)
    (args.out / "overhead_bench.md").write_text(head + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
