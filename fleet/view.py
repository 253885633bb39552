"""What `yolo-edge-fleet` knows about the devices on a broker, parsed from their own messages.

Pure functions only (no MQTT here, see agent/transport/session.py), so the parsing and the table are tested on
literal payloads. Devices publish retained `status`, `stats`, `settings` and `deploy/state` under
`<prefix>/<device>/` (docs/topics.md); whatever a payload lacks or gets wrong is shown as unknown,
never raised: one odd device must not hide the rest of the fleet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agent.transport import stats_schema, topics
from agent.transport.operator import Received
from fleet.printable import printable

STATUSES: tuple[str, ...] = ("online", "offline", "stopped")
DEPLOY_DONE: tuple[str, ...] = ("active", "failed", "rolled_back")  # a deploy/state that ends a deploy
LIST_TOPICS: tuple[str, ...] = (topics.STATUS, topics.STATS, topics.SETTINGS, topics.DEPLOY_STATE)
_SHOWN_CHARS = 40  # of a text from the network in one table cell


@dataclass(frozen=True)
class StatsSummary:
    """The parts of a `stats` payload the table shows; None where the payload does not say. Times: Unix s, ms."""

    ts: float | None = None
    fps: float | None = None
    inference_p50_ms: float | None = None
    model: str | None = None
    precision: str | None = None
    sha256: str | None = None
    outbox_pending: int | None = None
    cpu_temp_c: float | None = None


@dataclass(frozen=True)
class DeployState:
    """A `deploy/state` payload: state (downloading, verifying, active, failed, rolled_back), the reason if any."""

    state: str
    reason: str | None = None
    sha256: str | None = None
    ts: float | None = None
    request_id: str | None = None  # of the deploy command it answers, when that carried one

    @property
    def done(self) -> bool:
        return self.state in DEPLOY_DONE


@dataclass(frozen=True)
class DeviceView:
    """One device from its retained messages; None for what it has not published (or published unreadably)."""

    device: str
    status: str | None = None
    stats: StatsSummary | None = None
    deploy: DeployState | None = None
    settings: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """How one device answered a fleet command. state: ok, rejected, timeout, or the final deploy state."""

    device: str
    ok: bool
    state: str
    detail: str = ""


def split_topic(topic: str, prefix: str) -> tuple[str, str] | None:
    """`<prefix>/<device>/<rest>` as (device, rest), e.g. ("pi", "deploy/state"); None for other topics."""
    head = f"{prefix}/"
    if not topic.startswith(head):
        return None
    device, _, rest = topic[len(head) :].partition("/")
    return (device, rest) if device and rest else None


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: object) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer is valid JSON
        return None
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_status(payload: bytes) -> str:
    """`online`, `offline` or `stopped`; anything else shortened and quoted, so it stands out in the table."""
    text = payload.decode("utf-8", errors="replace").strip()
    return text if text in STATUSES else json.dumps(_short(text))


def parse_stats(payload: bytes) -> StatsSummary | None:
    """The table's view of a `stats` payload (agent/transport/stats_schema.py): what a field says, None where it
    says nothing or something of the wrong type; None if the payload is not a JSON object."""
    body = _json_object(payload)
    if body is None:
        return None
    stats = stats_schema.parse(body).stats
    model, mqtt, latency = stats.model, stats.mqtt, stats.latency_ms or {}
    inference = latency.get("inference")
    return StatsSummary(
        ts=stats.ts,
        fps=stats.fps,
        inference_p50_ms=None if inference is None else inference.p50,
        model=None if model is None else _text(model.name),
        precision=None if model is None else _text(model.precision),
        sha256=None if model is None else _text(model.sha256),
        outbox_pending=None if mqtt is None else mqtt.outbox_pending,
        cpu_temp_c=stats.cpu_temp_c,
    )


def parse_deploy_state(payload: bytes) -> DeployState | None:
    """A `deploy/state` payload: a JSON object with `state` (and `reason`/`error`, `sha256`, `ts`), or the bare word."""
    body = _json_object(payload)
    if body is None:
        word = payload.decode("utf-8", errors="replace").strip()
        return DeployState(_short(word)) if word and word.replace("_", "").isalpha() else None
    state = _text(body.get("state"))
    if state is None:
        return None
    reason = _text(body.get("reason")) or _text(body.get("error"))
    ids = body.get("request_id")
    request_id = ids if isinstance(ids, str) else None
    return DeployState(state, reason, _text(body.get("sha256")), _number(body.get("ts")), request_id)


def parse_set_result(payload: bytes) -> Outcome | None:
    """A `set/result` payload (agent/control/remote_settings.py) as an outcome with device ""; None if unreadable."""
    body = _json_object(payload)
    if body is None or not isinstance(body.get("ok"), bool):
        return None
    if body["ok"]:
        applied = body.get("applied") if isinstance(body.get("applied"), dict) else {}
        return Outcome("", True, "ok", "applied " + json.dumps(applied, separators=(",", ":")))
    return Outcome("", False, "rejected", _text(body.get("error")) or "rejected without a reason")


def answers_request(payload: bytes, request_id: str, sent_keys: frozenset[str]) -> bool:
    """Whether a `set/result` answers our `set`, sent with `request_id` and changing `sent_keys`.

    An answer carrying a request id is ours when the id is. An agent from before request ids sends
    none: then an acceptance counts only when it applied exactly the keys sent, so another operator's
    change arriving at the same moment is not taken for ours, and a rejection always counts.
    """
    body = _json_object(payload)
    if body is not None and "request_id" in body:
        return body["request_id"] == request_id
    if body is None or body.get("ok") is not True:
        return True
    applied = body.get("applied")
    return isinstance(applied, dict) and set(applied) == sent_keys


def devices_from(messages: Iterable[Received], prefix: str) -> list[DeviceView]:
    """Every device seen in `messages` (in arrival order, the last message per topic wins), sorted by id.

    An empty payload clears a retained topic, so it clears what the view held for it.
    """
    latest: dict[tuple[str, str], bytes] = {}
    for message in messages:
        where = split_topic(message.topic, prefix)
        if where is not None and where[1] in LIST_TOPICS:
            latest[where] = message.payload
    views: list[DeviceView] = []
    for device in sorted({device for device, _ in latest}):
        status, stats, settings, deploy = (latest.get((device, kind), b"") for kind in LIST_TOPICS)
        settings_body = _json_object(settings) if settings else None
        view = DeviceView(
            device,
            status=parse_status(status) if status else None,
            stats=parse_stats(stats) if stats else None,
            deploy=parse_deploy_state(deploy) if deploy else None,
            settings=MappingProxyType(settings_body) if settings_body is not None else None,
        )
        if view.status or view.stats or view.deploy or view.settings:
            views.append(view)
    return views


def _short(text: str, limit: int = _SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_age(seconds: float | None) -> str:
    """12s, 5m, 3h, 4d; '-' when unknown. A clock a little ahead of ours reads as 0s."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size, upto in (("s", 1, 90), ("m", 60, 90 * 60), ("h", 3600, 36 * 3600)):
        if seconds < upto:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def _fixed(value: float | None, digits: int, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def deploy_text(deploy: DeployState | None) -> str:
    if deploy is None:
        return "-"
    return _short(f"{deploy.state}: {deploy.reason}" if deploy.reason else deploy.state)


def _row(view: DeviceView, now: float) -> list[str]:
    stats = view.stats or StatsSummary()
    age = None if stats.ts is None else now - stats.ts
    return [
        view.device,
        view.status or "-",
        _fixed(stats.fps, 1),
        _fixed(stats.inference_p50_ms, 1, " ms"),
        _short(stats.model or "-", 24),
        stats.precision or "-",
        "-" if stats.outbox_pending is None else str(stats.outbox_pending),
        format_age(age),
        deploy_text(view.deploy),
    ]


HEADERS: tuple[str, ...] = (
    "DEVICE",
    "STATUS",
    "FPS",
    "INFER P50",
    "MODEL",
    "PRECISION",
    "OUTBOX",
    "STATS AGE",
    "DEPLOY",
)


def render_table(rows: list[list[str]], headers: tuple[str, ...]) -> str:
    """Left-aligned columns two spaces apart, headers first; no trailing spaces. Cells come from the network,
    so control characters in them are shown escaped (fleet/printable.py), never sent to the terminal."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


def devices_table(views: list[DeviceView], now: float) -> str:
    """The `fleet list` table; now: time.time(), against which the stats' age is measured."""
    return render_table([_row(view, now) for view in views], HEADERS)


def device_json(view: DeviceView, now: float) -> dict[str, Any]:
    """One device for `--format json`: the table's figures under stable names, times in Unix seconds."""
    stats, deploy = view.stats or StatsSummary(), view.deploy
    model = {"name": stats.model, "precision": stats.precision, "sha256": stats.sha256}
    return {
        "device": view.device,
        "status": view.status,
        "fps": stats.fps,
        "inference_p50_ms": stats.inference_p50_ms,
        "model": model if view.stats is not None else None,
        "outbox_pending": stats.outbox_pending,
        "cpu_temp_c": stats.cpu_temp_c,
        "stats_ts": stats.ts,
        "stats_age_s": None if stats.ts is None else round(max(0.0, now - stats.ts), 1),
        "deploy": None if deploy is None else {"state": deploy.state, "reason": deploy.reason, "sha256": deploy.sha256},
        "settings": None if view.settings is None else dict(view.settings),
    }


def outcomes_table(outcomes: list[Outcome]) -> str:
    return render_table([[o.device, o.state, o.detail] for o in outcomes], ("DEVICE", "RESULT", "DETAIL"))


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {"device": outcome.device, "ok": outcome.ok, "state": outcome.state, "detail": outcome.detail}
