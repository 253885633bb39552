"""The `<prefix>/<device>/deploy` command and the `deploy/state` messages that answer it.

Pure functions: whatever arrives (junk bytes, a huge payload, JSON nested 100 000 deep, a
file:// URL) ends in a DeployRejected naming the problem, never in an exception that could stop
the agent. The caller decides which thread parses and who publishes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent.control.request_id import KEY as REQUEST_ID
from agent.control.request_id import BadRequestId, take_request_id, with_request_id
from agent.transport.publisher import ReplyTo
from agent.urls import public_url

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_URL_CHARS = 2048
KEYS: tuple[str, ...] = ("url", "sha256")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SHOWN_CHARS = 60

# The states published on deploy/state, in the order a deployment goes through them.
DOWNLOADING, VERIFYING, ACTIVE, FAILED, ROLLED_BACK = "downloading", "verifying", "active", "failed", "rolled_back"


class DeployRejected(Exception):
    """A deploy command that starts nothing; the message is one line naming the problem.

    request_id: the command's, when it had a valid one, so that the refusal reaches who asked.
    """

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class DeployRequest:
    """A checked command: where the bundle archive is, the sha256 it must have (lowercase hex), and
    the request_id every `deploy/state` of this deployment carries back (None when it had none)."""

    url: str
    sha256: str
    request_id: str | None = None
    reply_to: ReplyTo | None = None  # an MQTT 5 command's response topic, where its states go too

    @property
    def shown_url(self) -> str:
        return public_url(self.url)


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def check_url(url: str, allow_http: bool) -> None:
    """Raise DeployRejected unless `url` is https:// (or http:// when allowed) with a host.

    Also applied to every redirect, so an https URL cannot be bounced to plain http or file://.
    A path or query that is not ASCII is refused here: urllib cannot send it (RFC 3986 wants it
    percent-encoded), and `"\\ud800"` in the command's JSON is not even text.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:
        raise DeployRejected(f"url {_shown(public_url(url))} is not a valid URL ({error})") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in allowed:
        hint = "" if allow_http or parts.scheme.lower() != "http" else "; set [deploy] allow_http = true to allow it"
        raise DeployRejected(
            f"url {_shown(public_url(url))}: scheme {parts.scheme or '(none)'!r} is not allowed; "
            f"expected {' or '.join(allowed)}{hint}"
        )
    if not host:
        raise DeployRejected(f"url {_shown(public_url(url))} has no host")
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise DeployRejected(f"url {_shown(public_url(url))} is not valid text (a lone surrogate)") from None
        if not (parts.path + parts.query + parts.fragment).isascii():
            raise DeployRejected(
                f"url {_shown(public_url(url))}: characters outside ASCII in its path or query must be "
                "percent-encoded (RFC 3986)"
            )


def parse_deploy(payload: bytes, allow_http: bool) -> DeployRequest:
    """The deployment a `deploy` payload asks for; DeployRejected naming every problem otherwise."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DeployRejected(f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} allowed")
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise DeployRejected('payload is not UTF-8 text; expected {"url": ..., "sha256": ...}') from None
    except ValueError as error:  # JSONDecodeError, and ints longer than Python converts
        raise DeployRejected(f"payload is not valid JSON: {error}") from None
    except RecursionError:
        raise DeployRejected("payload is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise DeployRejected(f'payload must be a JSON object {{"url": ..., "sha256": ...}}, got {type(body).__name__}')
    problems: list[str] = []
    request_id = None
    try:
        request_id = take_request_id(body)
    except BadRequestId as error:
        problems.append(str(error))
    allowed = ", ".join((*KEYS, REQUEST_ID))
    problems += [f"unknown key {_shown(key)}; allowed keys: {allowed}" for key in body if key not in KEYS]
    problems += [f"missing key {key!r}" for key in KEYS if key not in body]
    url, sha256 = body.get("url"), body.get("sha256")
    if "url" in body and (not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS):
        shown = _shown(public_url(url)) if isinstance(url, str) else _shown(url)  # a long URL may be a signed one
        problems.append(f"url: {shown} is not allowed; expected a URL of at most {MAX_URL_CHARS} characters")
    elif isinstance(url, str):
        try:
            check_url(url, allow_http)
        except DeployRejected as error:
            problems.append(str(error))
    if "sha256" in body and not (isinstance(sha256, str) and SHA256_RE.fullmatch(sha256.lower())):
        problems.append(
            f"sha256: {_shown(sha256)} is not allowed; expected 64 hex digits (yolo-edge-convert --archive)"
        )
    if problems:
        raise DeployRejected("; ".join(problems[:10]), request_id)
    assert isinstance(url, str) and isinstance(sha256, str)
    return DeployRequest(url, sha256.lower(), request_id)


def state_payload(
    state: str,
    request: DeployRequest | None,
    reason: str | None = None,
    request_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One `deploy/state` message: the state, when, which archive (sha256, url without secrets), why,
    and the request_id of the command it answers (request's, else the one given for a refusal)."""
    body: dict[str, Any] = {"state": state, "ts": round(time.time(), 3)}
    if request is not None:
        body["sha256"] = request.sha256
        body["url"] = request.shown_url
        request_id = request.request_id
    if reason is not None:
        body["reason"] = reason
    body.update(extra)
    return with_request_id(body, request_id)
