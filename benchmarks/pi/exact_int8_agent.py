"""`yolo-edge-agent` with onnxruntime's exact INT8 kernels: the Pi check's x86 reference on hosts
without VNNI.

    python -m benchmarks.pi.exact_int8_agent run --source ... --precision int8 --dry-run

On an x86 CPU without VNNI, onnxruntime's fast INT8 kernel sums pairs of products in saturating
16-bit integers (see agent/pipeline/inference.py), so the agent's INT8 detections there are not what an ARM
board computes. Everything else is the agent as installed: only the session option changes.
"""

from __future__ import annotations

import sys

import onnxruntime as ort

from agent.cli import main
from agent.pipeline import inference

_session_options = inference.session_options


def exact_session_options(threads: int, exact_int8: bool = False) -> ort.SessionOptions:
    return _session_options(threads, exact_int8=True)


if __name__ == "__main__":
    inference.session_options = exact_session_options
    sys.exit(main())
