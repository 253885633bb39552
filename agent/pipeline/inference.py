"""The onnxruntime session: the only module of the project that creates one."""

from __future__ import annotations

import ast
import os
import platform
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from agent.system.allocator import freed_blocks_unmapped
from agent.system.cpu_turns import TURNS


class ModelLoadError(Exception):
    """The model file cannot be loaded; the message names the file."""


@dataclass(frozen=True)
class ModelInfo:
    """What the agent needs to know about a detection model.

    input_hw: (height, width) in pixels. names: class id -> label.
    head: 'classic' or 'end2end'. output_shape: the first output's static shape.
    """

    input_name: str
    input_hw: tuple[int, int]
    output_shape: tuple[int, ...]
    names: dict[int, str]
    head: str
    metadata: dict[str, str]


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def cpu_has_vnni() -> bool:
    """True when the CPU has AVX-VNNI or AVX512-VNNI (x86) dot-product instructions."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_vnni" in text or " avx_vnni" in text


def session_options(threads: int, exact_int8: bool = False) -> ort.SessionOptions:
    """exact_int8: on x86, use onnxruntime's exact uint8 x int8 kernels. Without VNNI the fast kernel
    sums pairs of products in saturating int16, which costs a YOLO model several mAP points that an
    ARM board (exact arithmetic) would not lose; the exact kernel is no faster than FP32."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One model, one request at a time: inter-op threads would only compete with intra-op ones.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory pattern plans one block for every intermediate tensor at once; without it the arena
    # reuses freed chunks. YOLO11n at 640: peak RSS 191 -> 155 MB FP32, 129 -> 123 MB INT8, same speed.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    if exact_int8:
        options.add_session_config_entry("session.x64quantprecision", "1")
    register_shared_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    return options


# Every session of the process allocates from one CPU arena that grows by what is asked, not by doubling
# (onnxruntime's default): YOLOv8s at 640, agent peak RSS 166 -> 162 MB INT8, 244 -> 239 MB FP32, same
# speed. Sessions built one after another (precision auto, a deployment's probe) reuse its chunks.
_SAME_AS_REQUESTED = 1  # onnxruntime's ArenaExtendStrategy::kSameAsRequested
_arena_lock = threading.Lock()
_arena_registered = False


def register_shared_arena() -> None:
    """Register the process-wide CPU arena once (onnxruntime refuses a second registration)."""
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # max_mem 0: no cap; -1: onnxruntime's defaults for the initial chunk and dead bytes per chunk.
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, _SAME_AS_REQUESTED, -1, -1))
        _arena_registered = True


def _parse_names(raw: str | None, classes: int | None) -> dict[int, str]:
    if raw:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, dict):
            return {int(k): str(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return dict(enumerate(map(str, value)))
    return {i: str(i) for i in range(classes or 0)}


def infer_head(output_shape: tuple[int, ...], metadata: dict[str, str]) -> str:
    """'end2end' for (1, N, 6) outputs, 'classic' for (1, 4 + nc, N); metadata wins when present."""
    declared = metadata.get("yolo_edge_head")
    if declared in ("classic", "end2end"):
        return declared
    if len(output_shape) == 3 and output_shape[2] == 6 and output_shape[1] > output_shape[2]:
        return "end2end"
    return "classic"


class InferenceModel:
    """An onnxruntime CPU session for a single-input, batch-1 detection model."""

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        exact_int8: bool = False,
        *,
        quiet_between_runs: bool | None = None,
    ) -> None:
        """quiet_between_runs: onnxruntime's threads stop spinning when a run returns and spin again in the
        next; None: when the threads take every core (takes_every_core)."""
        self.path = Path(path)
        self.threads = threads or default_threads()
        # Its threads then hold every core while it runs. Between runs the frame loop postprocesses and
        # letterboxes on one core and a file's reader decodes the next frame on the other (cpu_turns), once
        # onnxruntime's threads stop spinning there: YOLO11n FP32 at 640 on 2 cores, the letterbox took
        # 2.9 ms beside a spinning thread and 1.0 ms without.
        self.takes_every_core = self.threads >= default_threads() and self.threads > 1
        options = session_options(self.threads, exact_int8)
        quiet = self.takes_every_core if quiet_between_runs is None else quiet_between_runs
        if quiet:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            with freed_blocks_unmapped():
                self.session = ort.InferenceSession(
                    str(self.path),
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
        except Exception as error:  # onnxruntime raises several unrelated types for a bad file
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"cannot load model {self.path}: {first_line}") from error
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"model {self.path} must have one (1, 3, H, W) input, has {[i.shape for i in inputs]}")
        height, width = inputs[0].shape[2:]
        if not isinstance(height, int) or not isinstance(width, int):
            raise ModelLoadError(f"model {self.path} has a dynamic input size; export it with a fixed imgsz")
        self._input_name = inputs[0].name
        self._output_names = [self.session.get_outputs()[0].name]
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        output_shape = tuple(d if isinstance(d, int) else -1 for d in self.session.get_outputs()[0].shape)
        head = infer_head(output_shape, metadata)
        classes = output_shape[1] - 4 if head == "classic" and output_shape[1] > 4 else None
        self.info = ModelInfo(
            input_name=self._input_name,
            input_hw=(height, width),
            output_shape=output_shape,
            names=_parse_names(metadata.get("names"), classes),
            head=head,
            metadata=metadata,
        )

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one (1, 3, H, W) float32 tensor; return the first output."""
        if not self.takes_every_core:
            return self.session.run(self._output_names, {self._input_name: tensor})[0]
        with TURNS.inference():
            return self.session.run(self._output_names, {self._input_name: tensor})[0]


TIMING_BLOCK_RUNS = 5


def median_latencies_ms(models: Mapping[str, InferenceModel], tensor: np.ndarray, runs: int) -> dict[str, float]:
    """Median milliseconds of `runs` timed run() calls per model, the models taking turns in blocks.

    Not turn by turn: with 2 or more threads, the pool of the model that just ran keeps spinning on
    the cores for a while and slows the next model down (2-thread FP32 YOLO11n at 640 measured 63 ms
    taking turns run by run, 40 ms in blocks; the agent runs one model, so 40 is the true figure).
    Each block starts with an untimed run; blocks alternate so drift in the machine's load hits
    every model alike.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    times: dict[str, list[float]] = {name: [] for name in models}
    while any(len(values) < runs for values in times.values()):
        for name, model in models.items():
            model.run(tensor)
            for _ in range(min(TIMING_BLOCK_RUNS, runs - len(times[name]))):
                start = time.perf_counter()
                model.run(tensor)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}
