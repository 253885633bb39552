"""The frame loop's side of a deployment: switch to the new model, watch it, confirm it or roll back.

The deployer's thread downloads, verifies and probes a bundle on a real frame; what it cannot know
is whether the model holds up in the loop itself. So the loop asks this object, between two frames,
for the detector to use, and runs every detector frame through it: the new model is on probation
for its first PROBATION_FRAMES frames, during which the old one is kept, and any failure returns to
the old one at once, on the same frame. Only this object and the loop's thread touch detectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agent.control.deploy.probe import check_detections
from agent.control.remote_settings import RuntimeSettings
from agent.pipeline.crops import RegionPlan
from agent.pipeline.detections import Detections
from agent.pipeline.detector import Detector, ModelIdentity

PROBATION_FRAMES = 5  # frames the new model must get through in the frame loop before it is confirmed


class ReadyModel(Protocol):
    """A deployed bundle that passed its checks and first inference (the deployer's ReadyBundle)."""

    @property
    def detector(self) -> Detector: ...


class Deployments(Protocol):
    """What the switch-over tells the deployer (agent/control/deploy/deployer.py) and asks of it."""

    def offer_frame(self, image: np.ndarray) -> None: ...

    def take_ready(self) -> ReadyModel | None: ...

    def switched(self, ready: ReadyModel) -> None: ...

    def refused(self, ready: ReadyModel, reason: str) -> None: ...

    def confirmed(self, ready: ReadyModel) -> None: ...

    def rolled_back(self, ready: ReadyModel, reason: str, identity: ModelIdentity) -> None: ...


@dataclass
class _Probation:
    ready: ReadyModel
    previous: Detector
    frames_left: int = PROBATION_FRAMES


class ModelSwitch:
    """The detector in use. deployments: where deployed models come from; None = never another."""

    def __init__(self, detector: Detector, deployments: Deployments | None = None) -> None:
        self._detector = detector
        self._deployments = deployments
        self._probation: _Probation | None = None

    @property
    def detector(self) -> Detector:
        return self._detector

    @property
    def on_probation(self) -> bool:
        """A new model runs and may still be rolled back: settings changes wait, so a roll-back finds the
        old model as it was."""
        return self._probation is not None

    def take_ready(self, runtime: RuntimeSettings | None) -> bool:
        """Switch to a deployed model that is ready, with the settings in force; True when it was switched to."""
        if self._deployments is None or self._probation is not None:
            return False
        ready = self._deployments.take_ready()
        if ready is None:
            return False
        new = ready.detector
        if runtime is not None:
            if unknown := sorted({*runtime.classes, *runtime.class_confidence} - set(new.names.values())):
                self._deployments.refused(
                    ready,
                    f"the settings in force name labels the new model does not know ({', '.join(unknown)}); "
                    'clear them with set {"classes": [], "class_confidence": {}} and deploy again',
                )
                return False
            new.apply_settings(runtime.postprocess(new.names, new.settings.max_detections))
        self._probation = _Probation(ready, self._detector)
        self._detector = new
        self._deployments.switched(ready)
        return True

    def detect(self, image_bgr: np.ndarray, plan: RegionPlan | None = None) -> tuple[Detections, float, float, float]:
        """Detector.detect() (or detect_plan() on the plan's views) with the detector in use. On probation, a
        failure (an exception, or detections that make no sense) rolls back to the previous detector, which
        then detects this frame."""
        probation = self._probation
        if probation is None:
            result = self._run(image_bgr, plan)
        else:
            try:
                result = self._run(image_bgr, plan)
                check_detections(result[0], self._detector.names)
            except Exception as error:  # an untrusted model must not stop the agent: the old one takes over
                self._roll_back(probation, f"the new model failed in the frame loop: {_first_line(error)}")
                result = self._run(image_bgr, plan)
            else:
                probation.frames_left -= 1
                if probation.frames_left <= 0:
                    self._probation = None
                    assert self._deployments is not None
                    self._deployments.confirmed(probation.ready)  # the previous detector is let go here
        if self._deployments is not None:
            self._deployments.offer_frame(image_bgr)
        return result

    def _run(self, image_bgr: np.ndarray, plan: RegionPlan | None) -> tuple[Detections, float, float, float]:
        if plan is None:
            return self._detector.detect(image_bgr)
        return self._detector.detect_plan(image_bgr, plan)

    def _roll_back(self, probation: _Probation, reason: str) -> None:
        assert self._deployments is not None
        self._probation = None
        self._detector = probation.previous
        self._deployments.rolled_back(probation.ready, reason, probation.previous.identity)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
