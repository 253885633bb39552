"""The agent's memory against Ultralytics' on the same FP32 model, with start-up beside it.

    python -m benchmarks.memory_bench [--models yolov8s,yolo11n] [--contenders all] [--imgsz 640]
                                      [--frames 40] [--threads 2] [--rounds 2] [--workdir DIR]
                                      [--out benchmarks/results]

Each model is built untrained from Ultralytics' own architecture file (yolov8s.yaml, yolo11n.yaml: 80
classes, the real sizes; memory does not depend on the weights' values, and nothing is downloaded),
saved as a .pt and converted by the real `yolo-edge-convert` at --imgsz. Then, each in a process of
its own with an empty state directory, motion gating off so that every frame runs the model:
`yolo-edge-agent run --precision fp32`, `int8` and `auto` (a first start: it loads and times both),
and Ultralytics' YOLO(onnx) on the bundle's FP32 model. Peak RSS is the child's VmHWM; steady RSS
the median VmRSS sampled from its first detections to its last; start-up the time from launch to the
first detections. Rounds alternate the contenders; the tables give the median over rounds.
--contenders picks some of them while iterating (e.g. "agent int8"); the peak / Ultralytics column
and the targets that need Ultralytics are then left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.agent_bench import AGENT_CLI, VIDEO_HW, ChildStateDirs, child_env, machine_facts, worker_cmd
from benchmarks.fixture.make_shapes import write_dataset
from benchmarks.fixture.video import write_shapes_video
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("agent fp32", "agent int8", "agent auto", "ultralytics fp32")
TARGET_FP32_VS_ULTRA = 0.25
TARGET_INT8_V8S_MB = 160.0
POLL_S = 0.02
# Every frame runs the model: the still parts of a video must not turn the measurement into one of the gate.
NO_MOTION = "[motion]\nenabled = false\n"


@dataclass(frozen=True)
class Measured:
    peak_mb: float
    steady_mb: float
    startup_s: float


def status_mb(pid: int) -> dict[str, float]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {
        key: int(value.split()[0]) / 1024
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if key in ("VmRSS", "VmHWM")
    }


def measure(cmd: list[str], threads: int, state_dir: Path, first_marker: str) -> Measured:
    """Run cmd to its end, polling its memory; the first stdout line holding first_marker is its first output."""
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(threads, state_dir),
        cwd=ROOT,
    )
    started = time.monotonic()
    first: list[float] = []
    last_line = [started]

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if first_marker in line:
                last_line[0] = time.monotonic()
                if not first:
                    first.append(last_line[0])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak, samples = 0.0, []
    while proc.poll() is None:
        now = status_mb(proc.pid)
        peak = max(peak, now.get("VmHWM", 0.0))
        if "VmRSS" in now:
            samples.append((time.monotonic(), now["VmRSS"]))
        time.sleep(POLL_S)
    reader.join(5)
    # Between the first and the last output: the teardown after it frees memory and is no steady state.
    steady = [rss for at, rss in samples if first and first[0] <= at <= last_line[0]]
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0 or not first or not steady:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"{' '.join(map(str, cmd[:5]))} ... exited {proc.returncode}:\n{tail}")
    return Measured(peak, statistics.median(steady), first[0] - started)


def build_bundle(arch: str, imgsz: int, workdir: Path, data_yaml: Path, threads: int) -> Path:
    """An untrained model of `arch` (yolov8s, yolo11n), saved and converted; reused when already built."""
    from benchmarks.converter_bench import run_convert

    out = workdir / f"{arch}-{imgsz}"
    if (out / "manifest.json").exists():
        progress(f"reusing {out}")
        return out
    weights = workdir / f"{arch}_untrained.pt"
    if not weights.exists():
        code = f"from ultralytics import YOLO; YOLO({arch + '.yaml'!r}).save({str(weights)!r})"
        subprocess.run([sys.executable, "-c", code], check=True, env=child_env(threads, workdir), cwd=workdir)
    options = ["--imgsz", str(imgsz), "--calib-size", "32", "--val-size", "8", "--threads", str(threads), "--force"]
    run_convert(weights, out, data_yaml, options)
    return out


def run_contender(name: str, bundle: Path, video: Path, args: argparse.Namespace, dirs: ChildStateDirs) -> Measured:
    state = dirs.fresh(name.replace(" ", "-"))
    if name == "ultralytics fp32":
        cmd = worker_cmd("ultralytics", bundle / "model.fp32.onnx", video, args.frames, args.threads, args.imgsz)
        return measure(cmd, args.threads, state, '"event"')
    config = state / "agent.toml"
    config.write_text(NO_MOTION)
    precision = name.split()[-1]
    cmd = [AGENT_CLI, "run", "--config", config, "--source", video, "--model", bundle, "--precision", precision]
    cmd += ["--dry-run", "--max-frames", str(args.frames), "--threads", str(args.threads)]
    return measure([str(c) for c in cmd], args.threads, state, "detections")


def tables(
    args: argparse.Namespace, results: dict[str, dict[str, list[Measured]]], facts: dict[str, str]
) -> list[Table]:
    rows, targets = [], []
    for arch, by_name in results.items():
        runs_ultra = by_name.get("ultralytics fp32")
        ultra = statistics.median(m.peak_mb for m in runs_ultra) if runs_ultra else None
        for name, runs in by_name.items():
            peak = statistics.median(m.peak_mb for m in runs)
            rows.append(
                (
                    arch,
                    name,
                    f"{peak:.0f}",
                    f"{statistics.median(m.steady_mb for m in runs):.0f}",
                    f"{peak / ultra:.3f}x" if ultra else "-",
                    f"{statistics.median(m.startup_s for m in runs):.2f}",
                    " / ".join(f"{m.peak_mb:.0f}" for m in runs),
                )
            )
        if ultra and "agent fp32" in by_name:
            fp32 = statistics.median(m.peak_mb for m in by_name["agent fp32"]) / ultra
            targets.append(
                (
                    f"{arch} agent FP32 peak / Ultralytics peak",
                    f"<= {TARGET_FP32_VS_ULTRA}x",
                    f"{fp32:.3f}x",
                    _verdict(fp32 <= TARGET_FP32_VS_ULTRA),
                )
            )
        if arch == "yolov8s" and "agent int8" in by_name:
            int8 = statistics.median(m.peak_mb for m in by_name["agent int8"])
            targets.append(
                (
                    "yolov8s agent INT8 peak RSS",
                    f"< {TARGET_INT8_V8S_MB:.0f} MB",
                    f"{int8:.0f} MB",
                    _verdict(int8 < TARGET_INT8_V8S_MB),
                )
            )
    size = f"{args.imgsz}x{args.imgsz}"
    return [
        Table("Machine and set-up", ("fact", "value"), tuple(facts.items())),
        Table("Targets", ("figure", "wanted", "measured", "result"), tuple(targets)),
        Table(
            f"Memory at {size}, {args.threads} threads, {args.frames} frames a run, median of {args.rounds} rounds",
            (
                "model",
                "contender",
                "peak RSS MB",
                "steady RSS MB",
                "peak / Ultralytics",
                "start-up s",
                "peak per round",
            ),
            tuple(rows),
            (
                "peak RSS: the child's VmHWM. steady RSS: median VmRSS from its first detections to its last.",
                "start-up: launch to the first detections (Ultralytics: to its first result, torch import included).",
                "agent auto: a first start, which loads INT8 and FP32 and times both before keeping one.",
            ),
        ),
    ]


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def plot(results: dict[str, dict[str, list[Measured]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (arch, by_name) in zip(axes[0], results.items(), strict=True):
        names = list(by_name)
        peaks = [statistics.median(m.peak_mb for m in by_name[n]) for n in names]
        steady = [statistics.median(m.steady_mb for m in by_name[n]) for n in names]
        y = range(len(names))
        ax.barh(y, peaks, color="#9db4d6", label="peak")
        ax.barh(y, steady, color="#2f5d9e", height=0.4, label="steady")
        ax.set_yticks(list(y), names)
        ax.invert_yaxis()
        ax.set_xlabel("RSS MB")
        ax.set_title(arch)
        for i, peak in enumerate(peaks):
            ax.text(peak, i, f" {peak:.0f}", va="center", fontsize=8)
    axes[0][0].legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="yolov8s,yolo11n", help="Ultralytics architectures, comma-separated")
    parser.add_argument(
        "--contenders", default="all", help=f"comma-separated, of: {', '.join(CONTENDERS)} (default: all)"
    )
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the models and video here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.models.split(",") if a.strip()]
    if not archs or args.frames < 2 or args.rounds < 1 or args.threads < 1:
        parser.error("--models needs a name, --frames at least 2, --rounds and --threads at least 1")
    picked = CONTENDERS if args.contenders == "all" else tuple(c.strip() for c in args.contenders.split(","))
    if not picked or any(c not in CONTENDERS for c in picked):
        parser.error(f"--contenders takes 'all' or some of: {', '.join(CONTENDERS)}")
    contenders = tuple(c for c in CONTENDERS if c in picked)
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        facts = machine_facts(args.threads)
        data_yaml = write_dataset(workdir / "shapes", splits={"train": (0, 32), "val": (100_000, 8)})
        video = workdir / "memory-video.avi"
        if not video.exists():
            write_shapes_video(video, frames=args.frames + 10, height=VIDEO_HW[0], width=VIDEO_HW[1])
        bundles = {arch: build_bundle(arch, args.imgsz, workdir, data_yaml, args.threads) for arch in archs}
        dirs = ChildStateDirs(workdir / f"states-{time.time_ns()}")
        results: dict[str, dict[str, list[Measured]]] = {a: {n: [] for n in contenders} for a in archs}
        for round_index in range(args.rounds):
            shift = round_index % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            for arch in archs:
                for name in order:
                    progress(f"round {round_index + 1}/{args.rounds}: {arch}, {name}")
                    m = run_contender(name, bundles[arch], video, args, dirs)
                    results[arch][name].append(m)
                    progress(f"    peak {m.peak_mb:.0f} MB, steady {m.steady_mb:.0f} MB, start-up {m.startup_s:.2f} s")
        facts["load average at end"] = machine_facts(args.threads)["load average at start (1/5/15 min)"]
        facts["models"] = ", ".join(f"{a}.yaml untrained, converted at {args.imgsz}" for a in archs)
        out = tables(args, results, facts)
        for table in out:
            print(render_text(table))
        args.out.mkdir(parents=True, exist_ok=True)
        plot(results, args.out / "memory_bench.png")
        head = (
            f"# Memory\n\n`{command_line('benchmarks.memory_bench', argv if argv is not None else sys.argv[1:])}`\n\n"
        )
        body = "![memory](memory_bench.png)\n\n" + "\n".join(render_markdown(t) for t in out)
        (args.out / "memory_bench.md").write_text(head + body)
        print(json.dumps({"wrote": [str(args.out / "memory_bench.md"), str(args.out / "memory_bench.png")]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
