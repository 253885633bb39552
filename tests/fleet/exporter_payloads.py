"""`stats` payloads shaped like the agent's (agent/runtime/messages.py stats_payload), for the exporter's tests.

Every field the agent sends is here, so a scrape of a device fed this shows every metric the exporter has.
"""

from __future__ import annotations

from typing import Any

from agent.transport.encoding import dumps

SHA = "0123456789abcdef" * 4


def stats_body(ts: float, window_s: float = 1.0, **changes: Any) -> dict[str, Any]:
    """A full stats message; `changes` replace top-level keys."""
    body: dict[str, Any] = {
        "ts": ts,
        "fps": 7.94,
        "window_s": window_s,
        "latency_ms": {
            "capture": {"p50": 1.5, "p95": 3.0, "max": 4.25},
            "inference": {"p50": 41.23, "p95": 52.5, "max": 80.0},
            "total": {"p50": 50.0, "p95": 61.0, "max": 90.5},
        },
        "frames": {
            "processed": 1200,
            "dropped": 3,
            "stale": 1,
            "detected": 400,
            "motion_skipped": 800,
            "regions": 530,
            "region_frames": 390,
        },
        "tracks": {"active": 2, "stationary": 1},
        "events": {"held": 0, "lost": 4},
        "rss_mb": 180.5,
        "cpu_temp_c": 61.5,
        "throttled": 0x50005,  # under-voltage and throttled now, both have occurred
        "uptime_s": 3600.2,
        "model": {"name": "shapes", "precision": "int8", "sha256": SHA},
        "mqtt": {
            "connected": True,
            "outbox_pending": 7,
            "outbox_dropped": 5,
            "reconnects": 2,
            "outbox_errors": 1,
            "outbox_writable": True,
            "outbox_recovered": 1,
            "outbox_set_aside": "outbox.sqlite3.corrupt-20261207T215646Z",
            "outbox_dropped_full": 3,
            "outbox_dropped_old": 2,
            "unstored": 0,
            "held_in_memory": 0,
            "dropped_overflow": 0,
            "dropped_unsendable": 1,
            "dropped_qos0": 9,
            "inflight": 0,
            "refused": False,
        },
        "source": {
            "kind": "file",
            "connected": True,
            "frames_read": 1210,
            "frames_invalid": 0,
            "reopen_count": 1,
            "stalls": 0,
        },
    }
    return body | changes


def stats_payload(ts: float, window_s: float = 1.0, **changes: Any) -> bytes:
    return dumps(stats_body(ts, window_s, **changes))
