"""The retained `status`, `stats` and `zones` payloads (docs/topics.md), checked and turned into values.

Pure functions: no MQTT, no Prometheus. A payload the exporter cannot trust whole (not JSON, not
an object, a field it reads of the wrong type) raises Malformed and is skipped: exporting half of
it would mix a device's figures of two different moments. Fields the payload lacks are fine
(a board without a temperature sensor, an agent with tracking off, an older agent).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agent.transport import topics
from fleet.exporter.schema import COUNT, FLAG, LATENCY_METRICS, NUMBER, STATS_FIELDS

STATUSES: tuple[str, ...] = (topics.ONLINE.decode(), topics.OFFLINE.decode(), topics.STOPPED.decode())
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # stage and zone names (the agent's config holds zones to this)
_MAX_LABEL_CHARS = 128  # a model's label: any text, but bounded
_LATENCY_KEYS = tuple(key for key, _, _ in LATENCY_METRICS)


class Malformed(ValueError):
    """A payload that is skipped; the message says what is wrong with it, in a few words."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    precision: str
    sha256: str


@dataclass(frozen=True)
class StatsReading:
    """One `stats` message. values: STATS_FIELDS' paths ("frames.processed") -> the number found there
    (flags as 0/1, not yet scaled); latency_ms: {stage: {"p50"|"p95"|"max": ms}}."""

    ts: float
    values: Mapping[str, float] = field(default_factory=dict)
    latency_ms: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    model: ModelInfo | None = None

    @property
    def window_s(self) -> float | None:
        return self.values.get("window_s")


@dataclass(frozen=True)
class ZonesReading:
    """One `zones` message: {zone: {label: objects in it now}}."""

    ts: float
    counts: Mapping[str, Mapping[str, int]]


def parse_status(payload: bytes) -> str:
    text = payload.decode("utf-8", errors="replace").strip()
    if text not in STATUSES:
        raise Malformed(f"status {_shown(text)} is none of {', '.join(STATUSES)}")
    return text


def parse_stats(payload: bytes) -> StatsReading:
    body = _object(payload)
    values: dict[str, float] = {}
    for spec in STATS_FIELDS:
        value = _at(body, spec.path)
        if value is not None:
            values[".".join(spec.path)] = _checked(value, spec.kind, ".".join(spec.path))
    return StatsReading(
        _ts(body), MappingProxyType(values), _latency(body.get("latency_ms")), _model(body.get("model"))
    )


def parse_zones(payload: bytes) -> ZonesReading:
    body = _object(payload)
    zones = body.get("zones")
    if not isinstance(zones, dict):
        raise Malformed("zones is not an object of zones")
    counts: dict[str, Mapping[str, int]] = {}
    for zone, labels in zones.items():
        if not _NAME_RE.fullmatch(zone):
            raise Malformed(f"zone name {_shown(zone)} is not a zone name")
        if not isinstance(labels, dict):
            raise Malformed(f"zones.{zone} is not an object of label counts")
        for label, count in labels.items():
            if not label or len(label) > _MAX_LABEL_CHARS:
                raise Malformed(f"zones.{zone} has a label of {len(label)} characters")
            _checked(count, COUNT, f"zones.{zone}.{label}")
        counts[zone] = MappingProxyType(dict(labels))
    return ZonesReading(_ts(body), MappingProxyType(counts))


def _object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise Malformed("not UTF-8") from None
    except (ValueError, RecursionError):
        raise Malformed("not JSON") from None
    if not isinstance(body, dict):
        raise Malformed(f"a JSON {type(body).__name__}, not an object")
    return body


def _ts(body: dict[str, Any]) -> float:
    ts = _finite(body.get("ts"))
    if ts is None or ts <= 0:
        raise Malformed("ts is not a Unix time")
    return ts


def _at(body: dict[str, Any], path: tuple[str, ...]) -> object:
    value: object = body
    for depth, key in enumerate(path):
        if value is None:  # a section the payload lacks: the field is simply unknown
            return None
        if not isinstance(value, dict):
            raise Malformed(f"{'.'.join(path[:depth])} is not an object")
        value = value.get(key)
    return value


def _finite(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else, an integer beyond a float's range included
    (a 400-digit integer is valid JSON, and float() of it raises OverflowError)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _checked(value: object, kind: str, where: str) -> float:
    if kind == FLAG and isinstance(value, bool):
        return float(value)
    number = _finite(value)
    if kind == COUNT and isinstance(value, int) and number is not None and number >= 0:
        return number
    if kind == NUMBER and number is not None:
        return number
    if number is None and isinstance(value, int) and not isinstance(value, bool):
        raise Malformed(f"{where} is a {len(str(abs(value)))}-digit number, beyond what a float holds")
    expected = {FLAG: "true or false", COUNT: "a whole number >= 0", NUMBER: "a number"}[kind]
    raise Malformed(f"{where} is {_short(json.dumps(value))}, not {expected}")


def _latency(value: object) -> Mapping[str, Mapping[str, float]]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise Malformed("latency_ms is not an object of stages")
    stages: dict[str, Mapping[str, float]] = {}
    for stage, figures in value.items():
        if not _NAME_RE.fullmatch(stage) or not isinstance(figures, dict):
            raise Malformed(f"latency_ms.{_shown(stage)} is not a stage's figures")
        stages[stage] = MappingProxyType(
            {
                key: _checked(figures[key], NUMBER, f"latency_ms.{stage}.{key}")
                for key in ("p50", "p95", "max")
                if key in figures
            }
        )
    return MappingProxyType(stages)


def _model(value: object) -> ModelInfo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Malformed("model is not an object")
    texts = [value.get(key) for key in ("name", "precision", "sha256")]
    if not all(isinstance(text, str) and 0 < len(text) <= _MAX_LABEL_CHARS for text in texts):
        raise Malformed("model's name, precision and sha256 are not all short texts")
    return ModelInfo(*texts)  # type: ignore[arg-type]


def _shown(text: str) -> str:
    return _short(json.dumps(text))


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
