"""Runtime settings changed over MQTT: `<prefix>/<device>/set` takes a JSON object of them.

A payload is checked whole before anything changes: every problem is collected, and the
change is either entirely valid or rejected with one line naming each bad key. Whatever
arrives (junk bytes, a 100 MB payload, JSON nested 100 000 deep, labels the model does not
know) ends in a SettingsRejected, never in an exception that could stop the agent.
Everything here is pure: the caller decides on which thread it runs and when it applies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from agent.control.request_id import BadRequestId, take_request_id, with_request_id
from agent.pipeline.postprocess import PostprocessSettings
from agent.transport.publisher import ReplyTo

MAX_PAYLOAD_BYTES = 64 * 1024
# Below this the systemd watchdog (WatchdogSec=30, pinged once per frame) would kill a healthy agent.
MIN_MAX_FPS = 0.1
MAX_MAX_FPS = 1000.0
_SHOWN_CHARS = 60  # of a bad value quoted in a reply: a 60 KB string must not come back whole
_SHOWN_PROBLEMS = 10  # 5000 unknown keys get a reply of ten lines' worth, not 5000


@dataclass(frozen=True)
class RuntimeSettings:
    """What may change while the agent runs.

    classes: labels to keep, () = all. class_confidence: label -> minimum score, overriding
    confidence. max_fps: frames processed per second at most, 0 = no limit. publish_detections:
    off keeps events, presence, snapshots and stats going but stops the per-frame messages.
    """

    confidence: float = 0.25
    iou: float = 0.45
    classes: tuple[str, ...] = ()
    class_confidence: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    max_fps: float = 0.0
    publish_detections: bool = True

    def changed(self, change: SettingsChange) -> RuntimeSettings:
        return replace(self, **change.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "iou": self.iou,
            "classes": list(self.classes),
            "class_confidence": dict(self.class_confidence),
            "max_fps": self.max_fps,
            "publish_detections": self.publish_detections,
        }

    def postprocess(self, names: Mapping[int, str], max_detections: int) -> PostprocessSettings:
        """The detector's thresholds; every label must be one of `names` (parse_settings made sure)."""
        ids = {label: class_id for class_id, label in names.items()}
        return PostprocessSettings(
            confidence=self.confidence,
            iou=self.iou,
            classes=frozenset(ids[label] for label in self.classes) if self.classes else None,
            class_confidence={ids[label]: threshold for label, threshold in self.class_confidence.items()},
            max_detections=max_detections,
        )


@dataclass(frozen=True)
class SettingsChange:
    """A validated change: only the keys the payload named, already in RuntimeSettings' types.

    request_id: the payload's `request_id`, which the answer carries back (None when it had none).
    reply_to: where an MQTT 5 `set` asked for its answer as well (its response topic), or None.
    """

    values: Mapping[str, Any]
    request_id: str | None = None
    reply_to: ReplyTo | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def as_dict(self) -> dict[str, Any]:
        return _plain(self.values)


class SettingsRejected(Exception):
    """A payload that changes nothing. keys: the settings at fault ([] when the payload as a whole is).

    request_id: the payload's, when it had a valid one, so that the rejection reaches who asked.
    """

    def __init__(self, problems: list[str], keys: list[str], request_id: str | None = None) -> None:
        self.request_id = request_id
        more = len(problems) - _SHOWN_PROBLEMS
        self.problems = problems[:_SHOWN_PROBLEMS] + ([f"and {more} more"] if more > 0 else [])
        self.keys = [key[:_SHOWN_CHARS] for key in keys[:_SHOWN_PROBLEMS]]
        super().__init__("; ".join(self.problems))


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    # JSON integers have no size limit: math.isfinite() would overflow on one wider than a float.
    return isinstance(value, int) or math.isfinite(value)


def _fraction(value: object) -> float:
    if not _is_number(value) or not 0 < value <= 1:
        raise ValueError("a number 0 < x <= 1")
    return float(value)


def _known(names: Mapping[int, str], labels: list[str]) -> None:
    known = set(names.values())
    unknown = [label for label in labels if label not in known]
    if unknown:
        listed = list(names.values())
        shown = ", ".join(listed[:20]) + (", ..." if len(listed) > 20 else "")
        raise ValueError(f"labels of this model ({shown}); unknown: {', '.join(_shown(u) for u in unknown)}")


def _classes(value: object, names: Mapping[int, str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("a list of labels, [] = all")
    _known(names, value)
    return tuple(dict.fromkeys(value))  # a label named twice is kept once, in the order given


def _class_confidence(value: object, names: Mapping[int, str]) -> Mapping[str, float]:
    if not isinstance(value, dict) or not all(_is_number(v) and 0 < v <= 1 for v in value.values()):
        raise ValueError("an object of label: number 0 < x <= 1, {} = none")
    _known(names, list(value))
    return MappingProxyType({label: float(threshold) for label, threshold in value.items()})


def _max_fps(value: object) -> float:
    if not _is_number(value) or not (value == 0 or MIN_MAX_FPS <= value <= MAX_MAX_FPS):
        raise ValueError(f"0 (no limit) or a number {MIN_MAX_FPS:g}..{MAX_MAX_FPS:g}")
    return float(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


_CHECKS = {
    "confidence": lambda value, names: _fraction(value),
    "iou": lambda value, names: _fraction(value),
    "classes": _classes,
    "class_confidence": _class_confidence,
    "max_fps": lambda value, names: _max_fps(value),
    "publish_detections": lambda value, names: _bool(value),
}
KEYS: tuple[str, ...] = tuple(_CHECKS)


def parse_settings(payload: bytes, names: Mapping[int, str]) -> SettingsChange:
    """The change a `set` payload asks for; SettingsRejected naming every problem otherwise.

    names: the model's class id -> label, which labels in classes and class_confidence must be.
    An empty object is a valid change of nothing (it answers with the settings in force).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SettingsRejected([f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} allowed"], [])
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise SettingsRejected(["payload is not UTF-8 text; expected a JSON object"], []) from None
    except ValueError as error:  # JSONDecodeError, and ints longer than Python converts
        raise SettingsRejected([f"payload is not valid JSON: {error}"], []) from None
    except RecursionError:
        raise SettingsRejected(["payload is not valid JSON: nested too deeply"], []) from None
    if not isinstance(body, dict):
        raise SettingsRejected([f"payload must be a JSON object of settings, got {type(body).__name__}"], [])
    values: dict[str, Any] = {}
    problems: list[str] = []
    bad: list[str] = []
    request_id = None
    try:
        request_id = take_request_id(body)
    except BadRequestId as error:
        problems.append(str(error))
        bad.append("request_id")
    for key, value in body.items():
        check = _CHECKS.get(key)
        if check is None:
            problems.append(f"unknown key {_shown(key)}; allowed keys: {', '.join(KEYS)}")
            bad.append(key)
            continue
        try:
            values[key] = check(value, names)
        except ValueError as error:
            problems.append(f"{key}: {_shown(value)} is not allowed; expected {error}")
            bad.append(key)
    if problems:
        raise SettingsRejected(problems, bad, request_id)
    return SettingsChange(values, request_id)


def accepted_payload(ts: float, change: SettingsChange, settings: RuntimeSettings) -> dict[str, Any]:
    """The reply on `set/result` once a change is in force: what it changed and every setting now."""
    body = {"ok": True, "ts": round(ts, 3), "applied": change.as_dict(), "settings": settings.as_dict()}
    return with_request_id(body, change.request_id)


def rejected_payload(ts: float, rejected: SettingsRejected) -> dict[str, Any]:
    """The reply on `set/result` to a payload that changed nothing: the problems and the keys at fault."""
    body = {"ok": False, "ts": round(ts, 3), "error": str(rejected), "keys": rejected.keys}
    return with_request_id(body, rejected.request_id)
