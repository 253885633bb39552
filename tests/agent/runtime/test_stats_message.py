"""The `stats` message the agent sends, byte for byte: built as a typed value (agent/transport/stats_schema.py)
since issue 25, it must stay what the dict builder before it sent (the expected bytes below are that builder's
output for the same figures): the same keys, in the same order, with the same values, null where it wrote null
and nothing where it left a field out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.pipeline.sources import SourceHealth
from agent.runtime.messages import stats_message
from agent.transport import stats_schema
from agent.transport.publisher import PublisherHealth

TS = 1_800_000_000.1234
# What the MQTT publisher adds under `mqtt`, in the order agent/transport/mqtt.py's health() gives it.
EXTRA: dict[str, object] = {
    "outbox_errors": 1,
    "outbox_writable": True,
    "outbox_dropped_full": 3,
    "outbox_dropped_old": 2,
    "outbox_recovered": 0,
    "outbox_set_aside": None,
    "unstored": 0,
    "held_in_memory": 4,
    "dropped_overflow": 0,
    "dropped_unsendable": 1,
    "dropped_qos0": 9,
    "refused_by_broker": 0,
    "inflight": 2,
    "refused": False,
}
SHA = "0123456789abcdef" * 4

CASES: dict[str, tuple[dict[str, Any], str]] = {
    # Over MQTT, tracking and gating on, a board with every figure, the final stats of a run whose last
    # window saw no frame (figures_age_s), a stream that lost its connection.
    "mqtt": (
        {
            "figures": {
                "fps": 7.94,
                "window_s": 10.02,
                "latency_ms": {
                    "capture": {"p50": 1.5, "p95": 3.0, "max": 4.25},
                    "inference": {"p50": 41.23, "p95": 52.5, "max": 80.0},
                },
                "figures_age_s": 0.52,
            },
            "frames": {"processed": 1200, "dropped": 3, "stale": 1, "detected": 400, "motion_skipped": 800},
            "tracks": {"active": 2, "stationary": 1},
            "events": {"held": 0, "lost": 4},
            "board": {"rss_mb": 180.5, "cpu_temp_c": 61.5, "throttled": 0x50005},
            "uptime_s": 3600.24,
            "model": {"name": "shapes", "precision": "int8", "sha256": SHA},
            "transport": PublisherHealth(True, 7, 5, 2, dict(EXTRA)),
            "source_health": SourceHealth("rtsp", False, 1210, 2, 1, "lost: rtsp://cam/stream", 6, 3, 4, 1),
        },
        '{"ts":1800000000.123,"fps":7.94,"window_s":10.02,"latency_ms":{"capture":{"p50":1.5,"p95":3.0,"max":4.25},'
        '"inference":{"p50":41.23,"p95":52.5,"max":80.0}},"figures_age_s":0.52,"frames":{"processed":1200,'
        '"dropped":3,"stale":1,"detected":400,"motion_skipped":800},"tracks":{"active":2,"stationary":1},'
        '"events":{"held":0,"lost":4},"rss_mb":180.5,"cpu_temp_c":61.5,"throttled":327685,"uptime_s":3600.2,'
        f'"model":{{"name":"shapes","precision":"int8","sha256":"{SHA}"}},'
        '"mqtt":{"connected":true,"outbox_pending":7,"outbox_dropped":5,"reconnects":2,"outbox_errors":1,'
        '"outbox_writable":true,"outbox_dropped_full":3,"outbox_dropped_old":2,"outbox_recovered":0,'
        '"outbox_set_aside":null,"unstored":0,"held_in_memory":4,"dropped_overflow":0,"dropped_unsendable":1,'
        '"dropped_qos0":9,"refused_by_broker":0,"inflight":2,"refused":false},"source":{"kind":"rtsp","connected":false,'
        '"frames_read":1210,"frames_invalid":2,"reopen_count":1,"stalls":4,"abandoned_readers":1,'
        '"last_error":"lost: rtsp://cam/stream"}}',
    ),
    # `--dry-run`'s publisher (no outbox figures), no tracking nor gating, a board that reports memory only,
    # a window without frames, a source that reports nothing (a test's fake).
    "dry_run": (
        {
            "figures": {"fps": 0.0, "window_s": 1.0, "latency_ms": {}},
            "frames": {"processed": 0, "dropped": 0, "stale": 0},
            "tracks": None,
            "events": {"held": 0, "lost": 0},
            "board": {"rss_mb": 95.0},
            "uptime_s": 1.04,
            "model": {"name": "m", "precision": "fp32", "sha256": "a" * 64},
            "transport": PublisherHealth(connected=True),
            "source_health": None,
        },
        '{"ts":1800000000.123,"fps":0.0,"window_s":1.0,"latency_ms":{},"frames":{"processed":0,"dropped":0,'
        '"stale":0},"events":{"held":0,"lost":0},"rss_mb":95.0,"uptime_s":1.0,"model":{"name":"m",'
        f'"precision":"fp32","sha256":"{"a" * 64}"}},"mqtt":{{"connected":true,"outbox_pending":0,'
        '"outbox_dropped":0,"reconnects":0},"source":{}}',
    ),
    # A corrupt outbox set aside, the disk refusing writes, throttled reported as 0, an empty error text.
    "set_aside": (
        {
            "figures": {"fps": 2.5, "window_s": 2.0, "latency_ms": {"total": {"p50": 9.0, "p95": 9.5, "max": 9.75}}},
            "frames": {"processed": 5, "dropped": 0, "stale": 0, "detected": 5, "motion_skipped": 0},
            "tracks": {"active": 0, "stationary": 0},
            "events": {"held": 3, "lost": 0},
            "board": {"rss_mb": 120.0, "throttled": 0},
            "uptime_s": 12.0,
            "model": {"name": "n", "precision": "int8", "sha256": "b" * 64},
            "transport": PublisherHealth(
                False,
                extra=EXTRA
                | {"outbox_recovered": 2, "outbox_set_aside": "outbox.sqlite3.corrupt-20261207T215646Z"}
                | {"outbox_writable": False},
            ),
            "source_health": SourceHealth("file", True, 5, 0, 0, "", 0, 0),
        },
        '{"ts":1800000000.123,"fps":2.5,"window_s":2.0,"latency_ms":{"total":{"p50":9.0,"p95":9.5,"max":9.75}},'
        '"frames":{"processed":5,"dropped":0,"stale":0,"detected":5,"motion_skipped":0},"tracks":{"active":0,'
        '"stationary":0},"events":{"held":3,"lost":0},"rss_mb":120.0,"throttled":0,"uptime_s":12.0,'
        f'"model":{{"name":"n","precision":"int8","sha256":"{"b" * 64}"}},"mqtt":{{"connected":false,'
        '"outbox_pending":0,"outbox_dropped":0,"reconnects":0,"outbox_errors":1,"outbox_writable":false,'
        '"outbox_dropped_full":3,"outbox_dropped_old":2,"outbox_recovered":2,'
        '"outbox_set_aside":"outbox.sqlite3.corrupt-20261207T215646Z","unstored":0,"held_in_memory":4,'
        '"dropped_overflow":0,"dropped_unsendable":1,"dropped_qos0":9,"refused_by_broker":0,"inflight":2,'
        '"refused":false},"source":{"kind":"file","connected":true,"frames_read":5,"frames_invalid":0,"reopen_count":0,'
        '"stalls":0,"abandoned_readers":0,"last_error":""}}',
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_stats_sent_are_byte_for_byte_what_they_were(case: str) -> None:
    figures, expected = CASES[case]
    stats = stats_message(ts=TS, **figures)
    assert stats_schema.encode(stats).decode() == expected
    assert stats_schema.parse(json.loads(expected)) == stats_schema.Parsed(stats), "a reader gets back what was built"


@pytest.mark.parametrize(
    ("where", "change", "wording"),
    [
        ("transport", PublisherHealth(True, extra={"outbox_flavour": 1}), "MqttFigures has no field outbox_flavour"),
        ("transport", PublisherHealth(True, extra={"unstored": -1}), "MqttFigures.unstored is -1, not a whole"),
        ("board", {"rss_mb": 95.0, "fan_rpm": 3000}, "Stats has no field fan_rpm"),
    ],
)
def test_a_figure_the_schema_does_not_describe_is_a_bug_that_raises(where: str, change: object, wording: str) -> None:
    """The agent cannot send what the readers were never told of: the schema is changed first."""
    figures = CASES["dry_run"][0] | {where: change}
    with pytest.raises(ValueError, match=wording):
        stats_message(ts=TS, **figures)
