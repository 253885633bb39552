"""The `stats` message (docs/topics.md), described once: its fields, their JSON types, their order.

The agent builds a `Stats` and sends `encode(stats)` (agent/runtime/messages.py); the fleet's table
(fleet/view.py) and its exporter (fleet/exporter/readings.py) read what arrives with `parse`. It
describes a message, names and types, nothing of frames: it sits in transport because the fleet may
import transport and config only.

Every field is optional to a reader: a board without a temperature sensor, tracking off, `--dry-run`
(no outbox figures), an agent older than the field. None means the message does not say; a None
field is left out of the JSON, and a JSON null reads as None. Types: `int` is a whole number >= 0,
`float` a finite number, `bool` true or false, `str` a text; no number beyond a float's range.
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, TypeVar

from agent.transport.encoding import dumps

__all__ = [
    "EventCounts",
    "FrameCounts",
    "ModelIdentity",
    "MqttFigures",
    "Parsed",
    "SourceFigures",
    "StageLatency",
    "Stats",
    "TrackCounts",
    "build",
    "encode",
    "parse",
    "paths",
]

T = TypeVar("T")
STAGE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # latency_ms's keys (the agent's stages are fixed words)


@dataclass(frozen=True)
class _Rule:
    """What a field needs beyond its type. required: a reader wants it whenever its object is there.
    problem: the one wording for anything wrong with it. null_with: written as null rather than left
    out whenever that other field of its object is written."""

    required: bool = False
    positive: bool = False
    problem: str | None = None
    null_with: str | None = None


_RULE = "stats_schema.rule"
_MODEL_PROBLEM = "model's name, precision and sha256 are not all texts"


def _ruled(**rule: Any) -> Any:
    return field(default=None, metadata={_RULE: _Rule(**rule)})


@dataclass(frozen=True)
class StageLatency:
    """One stage over the stats window, ms."""

    p50: float | None = None
    p95: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class FrameCounts:
    """Since the agent started. detected and motion_skipped: while the scene watches (gate counts); regions and
    region_frames: with motion regions on (regions / region_frames is the crops per such frame)."""

    processed: int | None = None
    dropped: int | None = None
    stale: int | None = None
    detected: int | None = None
    motion_skipped: int | None = None
    regions: int | None = None  # with [motion] regions: crops the detector ran on
    region_frames: int | None = None  # and the detector frames that ran on crops


@dataclass(frozen=True)
class TrackCounts:
    """Confirmed tracks open now, and how many stand still (only with tracking on)."""

    active: int | None = None
    stationary: int | None = None


@dataclass(frozen=True)
class EventCounts:
    """Numbered messages held in memory while the outbox refuses them; lost once memory was full too."""

    held: int | None = None
    lost: int | None = None


@dataclass(frozen=True)
class ModelIdentity:
    name: str | None = _ruled(required=True, problem=_MODEL_PROBLEM)
    precision: str | None = _ruled(required=True, problem=_MODEL_PROBLEM)
    sha256: str | None = _ruled(required=True, problem=_MODEL_PROBLEM)


@dataclass(frozen=True)
class MqttFigures:
    """The publisher's figures. Every publisher gives the first four; the MQTT one (not `--dry-run`'s)
    adds the rest, outbox and spool included (docs/topics.md, "The outbox, QoS and reconnects")."""

    connected: bool | None = None
    outbox_pending: int | None = None
    outbox_dropped: int | None = None
    reconnects: int | None = None
    outbox_errors: int | None = None
    outbox_writable: bool | None = None
    outbox_dropped_full: int | None = None
    outbox_dropped_old: int | None = None
    outbox_recovered: int | None = None
    # The outbox reports the two together: null says no corrupt file was set aside.
    outbox_set_aside: str | None = _ruled(null_with="outbox_recovered")
    unstored: int | None = None
    held_in_memory: int | None = None
    dropped_overflow: int | None = None
    dropped_unsendable: int | None = None
    dropped_qos0: int | None = None
    refused_by_broker: int | None = None
    inflight: int | None = None
    refused: bool | None = None  # the broker refuses the connection now (credentials, ACL)


@dataclass(frozen=True)
class SourceFigures:
    """The camera or stream (agent/pipeline/sources.py SourceHealth); last_error only after one."""

    kind: str | None = None
    connected: bool | None = None
    frames_read: int | None = None
    frames_invalid: int | None = None
    reopen_count: int | None = None
    stalls: int | None = None
    abandoned_readers: int | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Stats:
    """One `stats` message, in the JSON's order. ts: Unix s; fps, window_s, latency_ms: over the stats
    window; figures_age_s: only in the final stats, when they repeat the last window that saw frames;
    rss_mb, cpu_temp_c, throttled (vcgencmd bits): where the board reports them."""

    ts: float | None = _ruled(required=True, positive=True, problem="ts is not a Unix time")
    fps: float | None = None
    window_s: float | None = None
    latency_ms: Mapping[str, StageLatency] | None = None
    figures_age_s: float | None = None
    frames: FrameCounts | None = None
    tracks: TrackCounts | None = None
    events: EventCounts | None = None
    rss_mb: float | None = None
    cpu_temp_c: float | None = None
    throttled: int | None = None
    uptime_s: float | None = None
    model: ModelIdentity | None = None
    mqtt: MqttFigures | None = None
    source: SourceFigures | None = None


@dataclass(frozen=True)
class Parsed:
    """What `parse` read. stats: every field it could read, None where the message does not say or says
    it wrongly. problems: one short line per field of the wrong type, in message order; () if none."""

    stats: Stats
    problems: tuple[str, ...] = ()


# -- the description, as the readers and the writer walk it -------------------------------------------------

_SCALARS = (bool, int, float, str)
_EXPECTED = {bool: "true or false", int: "a whole number >= 0", float: "a number", str: "a text"}


@dataclass(frozen=True)
class _Field:
    name: str
    type: type  # one of _SCALARS, or a dataclass
    stages: bool  # a Mapping[str, type] keyed by stage names (latency_ms)
    rule: _Rule


@cache
def _fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    described = []
    for spec in fields(cls):
        (kind,) = [arg for arg in typing.get_args(hints[spec.name]) if arg is not type(None)]
        stages = typing.get_origin(kind) is Mapping
        if stages:
            kind = typing.get_args(kind)[1]
        assert kind in _SCALARS or is_dataclass(kind), f"{cls.__name__}.{spec.name}: {kind} is not described"
        described.append(_Field(spec.name, kind, stages, spec.metadata.get(_RULE, _Rule())))
    return tuple(described)


def paths(cls: type = Stats) -> tuple[tuple[str, ...], ...]:
    """Every number, flag and text of the message by where it sits, ("frames", "processed"), in order
    (latency_ms's stages, named by the agent, are not listed)."""
    found: list[tuple[str, ...]] = []
    for spec in _fields(cls):
        if spec.stages:
            continue
        if spec.type in _SCALARS:
            found.append((spec.name,))
        else:
            found.extend((spec.name, *path) for path in paths(spec.type))
    return tuple(found)


# -- reading ---------------------------------------------------------------------------------------------


def parse(body: Mapping[str, Any]) -> Parsed:
    """A received `stats` (JSON already decoded to an object) as the typed value and its problems.

    Keys it does not describe are ignored (a newer agent's). The exporter skips a message with any
    problem; the fleet table shows what could be read and "-" for the rest.
    """
    problems: list[str] = []
    stats = _read(Stats, body, "", problems)
    return Parsed(stats, tuple(dict.fromkeys(problems)))  # a model's three texts share one wording


def _read(cls: type[T], body: Mapping[str, Any], where: str, problems: list[str], building: bool = False) -> T:
    """building: the agent's own figures (build): every key must be described, none is required."""
    if building and (unknown := set(body) - {spec.name for spec in _fields(cls)}):
        problems.append(f"{where or cls.__name__} has no field {', '.join(sorted(unknown))}")
    values: dict[str, object] = {}
    for spec in _fields(cls):
        path = f"{where}.{spec.name}" if where else spec.name
        raw = body.get(spec.name)
        if raw is None:  # absent, or null: not said
            if spec.rule.required and not building:
                problems.append(spec.rule.problem or f"{path} is missing")
            continue
        if is_dataclass(spec.type) and not isinstance(raw, dict):
            problems.append(f"{path} is not an object" + (" of stages" if spec.stages else ""))
        elif spec.stages:
            values[spec.name] = _read_stages(spec.type, raw, path, problems, building)
        elif is_dataclass(spec.type):
            values[spec.name] = _read(spec.type, raw, path, problems, building)
        else:
            value, problem = _scalar(spec.type, raw, path)
            if problem is None and spec.rule.positive and not value > 0:  # type: ignore[operator]
                problem = f"{path} is {_shown(raw)}, not above 0"
            if problem is not None:
                problems.append(spec.rule.problem or problem)
            else:
                values[spec.name] = value
    return cls(**values)


def _read_stages(cls: type, raw: dict, path: str, problems: list[str], building: bool) -> Mapping[str, Any]:
    stages: dict[str, object] = {}
    for stage, figures in raw.items():
        if STAGE_NAME_RE.fullmatch(stage) and isinstance(figures, dict):
            stages[stage] = _read(cls, figures, f"{path}.{stage}", problems, building)
        else:
            problems.append(f"{path}.{_shown(stage)} is not a stage's figures")
    return MappingProxyType(stages)


def _scalar(kind: type, raw: object, path: str) -> tuple[object, str | None]:
    """(the value as `kind`, None), or (None, what is wrong with it)."""
    if kind is bool:
        return (raw, None) if isinstance(raw, bool) else (None, _wrong(kind, raw, path))
    if kind is str:
        return (raw, None) if isinstance(raw, str) else (None, _wrong(kind, raw, path))
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        return None, _wrong(kind, raw, path)
    try:
        number = float(raw)
    except OverflowError:  # a 400-digit integer is valid JSON
        return None, f"{path} is a {len(str(abs(raw)))}-digit number, beyond what a float holds"
    if not math.isfinite(number):
        return None, _wrong(kind, raw, path)
    if kind is float:
        return number, None
    if number >= 0 and number.is_integer():
        return int(raw), None
    return None, _wrong(kind, raw, path)


def _wrong(kind: type, raw: object, path: str) -> str:
    return f"{path} is {_shown(raw)}, not {_EXPECTED[kind]}"


def _shown(value: object, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- writing ---------------------------------------------------------------------------------------------


def build(cls: type[T], values: Mapping[str, object]) -> T:
    """For the agent: figures it holds as a dict (the stats window's, the board's, the publisher's) as
    the typed value. A key not described, or a value of the wrong type, is a bug in the agent: raises."""
    problems: list[str] = []
    value = _read(cls, values, "" if cls is Stats else cls.__name__, problems, building=True)
    if problems:
        raise ValueError(f"stats: {'; '.join(problems)} (agent/transport/stats_schema.py describes the message)")
    return value


def encode(stats: Stats) -> bytes:
    """The message as the agent sends it: compact JSON, fields in the order above, None left out."""
    return dumps(_json(stats))


def _json(value: object) -> dict[str, object]:
    body: dict[str, object] = {}
    for spec in _fields(type(value)):
        item = getattr(value, spec.name)
        if item is None:
            if spec.rule.null_with is None or getattr(value, spec.rule.null_with) is None:
                continue
        elif spec.stages:
            item = {stage: _json(figures) for stage, figures in item.items()}
        elif is_dataclass(spec.type):
            item = _json(item)
        body[spec.name] = item
    return body
