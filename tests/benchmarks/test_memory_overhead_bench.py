"""The memory and overhead benchmarks' own machinery: a child's peak and steady RSS, and spinning off."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.pipeline import inference
from benchmarks.memory_bench import measure
from benchmarks.overhead_bench import spinning

# A child that prints its "first output", holds 80 MB for a while, frees it, prints again, and exits.
CHILD = """
import time
print("detections", flush=True)
block = bytearray(80 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(0.5)
print("detections", flush=True)
"""


def test_measure_sees_the_childs_peak_and_its_steady_state_between_outputs(tmp_path: Path) -> None:
    result = measure([sys.executable, "-c", CHILD], 1, tmp_path, "detections")
    assert result.peak_mb >= 80, result
    assert result.steady_mb <= result.peak_mb and result.startup_s > 0


def test_measure_names_a_child_that_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited 3"):
        measure([sys.executable, "-c", "import sys; print('detections'); sys.exit(3)"], 1, tmp_path, "detections")


def test_spinning_off_reaches_the_sessions_built_inside_and_only_those() -> None:
    with spinning(False):
        inside = inference.session_options(1)
    outside = inference.session_options(1)
    assert inside.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # onnxruntime raises for an entry that was never set
        outside.get_session_config_entry("session.intra_op.allow_spinning")
