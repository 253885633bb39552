"""Import onnxruntime and run each given model once on a fixed input; print what came out.

    python benchmarks/pi/ort_probe.py [MODEL.onnx ...]

Run by pi_check.sh under qemu to tell which onnxruntime releases import and compute on the
emulated Pi CPUs, and on the host for the reference figures. Needs only onnxruntime and numpy,
so it runs from the file alone (no project import).
"""

from __future__ import annotations

import sys

import numpy as np


def main(paths: list[str]) -> int:
    print("importing onnxruntime", flush=True)  # a crash right after this line is the import itself
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} imported; providers {ort.get_available_providers()}", flush=True)
    for path in paths:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        model_input = session.get_inputs()[0]
        image = np.random.default_rng(0).random(model_input.shape, dtype=np.float32)
        output = session.run(None, {model_input.name: image})[0]
        # Class scores only: box coordinates dwarf them in a plain sum.
        print(f"{path}: output {output.shape}, max score {output[:, 4:].max():.5f}, sum {output.sum():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
