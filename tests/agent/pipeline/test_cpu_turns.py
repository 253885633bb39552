"""A file read ahead of the frame loop is decoded between inferences that hold every core, never during one."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.pipeline.capture import Backend
from agent.pipeline.inference import InferenceModel, default_threads
from agent.pipeline.sources import FrameSource
from agent.system.cpu_turns import TURNS, CpuTurns

FRAMES = 12
# How long each inference gives a reader that does not wait its turn to decode in it (its grabs take
# microseconds), and how long the loop's postprocess waits at most for the reader's next decode.
INFERENCE_S = 0.03
GRAB_WAIT_S = 2.0


class CountingCapture:
    """A file of FRAMES tiny frames; each grab notes the consumer's phase at that moment."""

    def __init__(self, phases: list[str], phase: list[str], grabbed: threading.Condition) -> None:
        self.left = FRAMES
        self.phases, self.phase, self.grabbed = phases, phase, grabbed

    def grab(self) -> bool:
        with self.grabbed:
            self.phases.append(self.phase[0])
            self.grabbed.notify_all()
        self.left -= 1
        return self.left >= 0

    def retrieve(self) -> tuple[bool, Any]:
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self) -> None:
        pass


def _file_source(phases: list[str], phase: list[str], grabbed: threading.Condition | None = None) -> FrameSource:
    grabbed = grabbed or threading.Condition()
    first = CountingCapture(phases, phase, grabbed)
    backend = Backend("file", "counting file", False, lambda: CountingCapture(phases, phase, grabbed))
    return FrameSource(backend, loop=False, fps=0.0, reconnect_max_s=1.0, first=first)


def test_the_reader_decodes_after_an_inference_never_during_one_and_every_frame_arrives() -> None:
    phases: list[str] = []
    phase = ["start"]
    delivered = 0
    grabbed = threading.Condition()
    with _file_source(phases, phase, grabbed) as source:
        while not source.ended:
            frame = source.read(2.0)
            if frame is None:
                continue
            delivered += 1
            phase[0] = "letterbox"
            with TURNS.inference(), grabbed:
                phase[0] = "inference"
                # A reader that decodes whenever there is room in its queue would do it now.
                grabbed.wait_for(lambda: len(phases) > FRAMES, INFERENCE_S)
            with grabbed:
                phase[0] = "postprocess"
                before = len(phases)
                # The reader's turn: its next decode comes now, unless it read the whole file already.
                grabbed.wait_for(lambda b=before: len(phases) > b or len(phases) > FRAMES, GRAB_WAIT_S)
    assert delivered == FRAMES
    assert len(phases) == FRAMES + 1  # the last grab finds the end
    assert "inference" not in phases, phases
    # Once the queue is full the reader runs a frame ahead; it decodes when an inference has ended, not when
    # the loop takes a frame and is about to start the next one (a slow wake-up may still land there: a
    # reader that decoded when a frame was taken lands there every other frame).
    ahead = phases[4:]
    assert ahead.count("postprocess") >= 0.75 * len(ahead), phases


def test_a_loop_that_runs_no_inference_is_not_kept_waiting() -> None:
    phases: list[str] = []
    with _file_source(phases, ["none"]) as source:
        frames = []
        while not source.ended:
            if (frame := source.read(2.0)) is not None:
                frames.append(frame)
    assert [f.frame_id for f in frames] == list(range(1, FRAMES + 1))


def test_waits_end_with_the_inference() -> None:
    turns = CpuTurns()
    assert turns.wait_until_free(0.0)
    started, finish = threading.Event(), threading.Event()

    def infer() -> None:
        with turns.inference():
            started.set()
            finish.wait(5)

    worker = threading.Thread(target=infer)
    worker.start()
    assert started.wait(5)
    ended = turns.ended
    assert not turns.wait_until_free(0.01) and not turns.wait_for_end_after(ended, 0.01)
    finish.set()
    assert turns.wait_for_end_after(ended, 5) and turns.wait_until_free(0.0)
    worker.join(5)
    assert turns.ended == ended + 1


@pytest.mark.skipif(default_threads() < 2, reason="one core: a single thread never spins")
def test_a_session_on_every_core_stops_spinning_between_runs(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path)
    every = InferenceModel(model, default_threads())
    fewer = InferenceModel(model, 1)
    assert every.takes_every_core and not fewer.takes_every_core
    assert every.session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError):  # onnxruntime raises for an entry that was never set
        fewer.session.get_session_options().get_session_config_entry("session.force_spinning_stop")
    tensor = np.zeros((1, 3, 8, 8), np.float32)
    ended = TURNS.ended
    every.run(tensor)
    fewer.run(tensor)
    assert TURNS.ended == ended + 1, "only the session on every core takes turns with the reader"


def _tiny_model(tmp_path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Conv", ["images", "w"], ["output"])
    weights = helper.make_tensor("w", TensorProto.FLOAT, (6, 3, 1, 1), [0.1] * 18)
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, (1, 3, 8, 8))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, (1, 6, 8, 8))],
        [weights],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), os.fspath(path))
    return path
