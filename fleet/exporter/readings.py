"""The retained `status`, `stats`, `zones` and `lines` payloads (docs/topics.md), checked and turned into values.

Pure functions: no MQTT, no Prometheus. A payload the exporter cannot trust whole (not JSON, not
an object, a field of the wrong type) raises Malformed and is skipped: exporting half of it would
mix a device's figures of two different moments. Fields the payload lacks are fine (a board
without a temperature sensor, an agent with tracking off, an older agent). What `stats` holds and
of which types is the message's own description (agent/transport/stats_schema.py), which the
agent writes with and the fleet table reads with too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agent.transport import stats_schema, topics
from fleet.exporter.schema import STATS_FIELDS

STATUSES: tuple[str, ...] = (topics.ONLINE.decode(), topics.OFFLINE.decode(), topics.STOPPED.decode())
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # zone and line names (the agent's config holds them to this)
_MAX_LABEL_CHARS = 128  # a model's label: any text, but bounded


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
    parsed = stats_schema.parse(_object(payload))
    if parsed.problems:
        raise Malformed(parsed.problems[0])
    stats = parsed.stats
    assert stats.ts is not None  # required: a stats without it has a problem
    values: dict[str, float] = {}
    for spec in STATS_FIELDS:
        value = _at(stats, spec.path)
        if value is not None:
            values[".".join(spec.path)] = float(value)  # type: ignore[arg-type]
    latency = {stage: _figures(figures) for stage, figures in (stats.latency_ms or {}).items()}
    return StatsReading(stats.ts, MappingProxyType(values), MappingProxyType(latency), _model(stats.model))


def _figures(stage: stats_schema.StageLatency) -> Mapping[str, float]:
    known = {"p50": stage.p50, "p95": stage.p95, "max": stage.max}
    return MappingProxyType({key: value for key, value in known.items() if value is not None})


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
            _count(count, f"zones.{zone}.{label}")
        counts[zone] = MappingProxyType(dict(labels))
    return ZonesReading(_ts(body), MappingProxyType(counts))


LINE_DIRECTIONS = ("in", "out")


@dataclass(frozen=True)
class LinesReading:
    """One `lines` message: {line: {"in"|"out": {label: crossings since the last reset}}}."""

    ts: float
    counts: Mapping[str, Mapping[str, Mapping[str, int]]]


def parse_lines(payload: bytes) -> LinesReading:
    """The retained `lines`: every count a whole number >= 0 (one too big for a float is malformed too)."""
    body = _object(payload)
    lines = body.get("lines")
    if not isinstance(lines, dict):
        raise Malformed("lines is not an object of lines")
    counts: dict[str, Mapping[str, Mapping[str, int]]] = {}
    for line, directions in lines.items():
        if not _NAME_RE.fullmatch(line):
            raise Malformed(f"line name {_shown(line)} is not a line name")
        if not isinstance(directions, dict) or not set(directions) <= set(LINE_DIRECTIONS):
            raise Malformed(f"lines.{line} is not an object of in and out")
        per_direction: dict[str, Mapping[str, int]] = {}
        for direction, labels in directions.items():
            if not isinstance(labels, dict):
                raise Malformed(f"lines.{line}.{direction} is not an object of label counts")
            for label, count in labels.items():
                if not label or len(label) > _MAX_LABEL_CHARS:
                    raise Malformed(f"lines.{line}.{direction} has a label of {len(label)} characters")
                _count(count, f"lines.{line}.{direction}.{label}")
            per_direction[direction] = MappingProxyType(dict(labels))
        counts[line] = MappingProxyType(per_direction)
    return LinesReading(_ts(body), MappingProxyType(counts))


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


def _at(value: object, path: tuple[str, ...]) -> object:
    """The field at `path` of a typed stats value; None where the message does not say."""
    for key in path:
        if value is None:
            return None
        value = getattr(value, key)
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


def _count(value: object, where: str) -> int:
    number = _finite(value)
    if isinstance(value, int) and not isinstance(value, bool) and number is not None and number >= 0:
        return value
    if number is None and isinstance(value, int) and not isinstance(value, bool):
        raise Malformed(f"{where} is a {len(str(abs(value)))}-digit number, beyond what a float holds")
    raise Malformed(f"{where} is {_short(json.dumps(value))}, not a whole number >= 0")


def _model(model: stats_schema.ModelIdentity | None) -> ModelInfo | None:
    """Its texts become a label's values: each must be there and short."""
    if model is None:
        return None
    texts = (model.name, model.precision, model.sha256)
    if not all(text is not None and 0 < len(text) <= _MAX_LABEL_CHARS for text in texts):
        raise Malformed("model's name, precision and sha256 are not all short texts")
    return ModelInfo(*texts)  # type: ignore[arg-type]


def _shown(text: str) -> str:
    return _short(json.dumps(text))


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
