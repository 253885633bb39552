"""Download one file over HTTPS (or HTTP when allowed) with a size cap, timeouts and a running sha256.

The size cap is enforced while streaming (a server that lies about Content-Length, or sends none,
is cut off at the limit, not after it filled the disk). `timeout_s` bounds connecting and every
read; `max_duration_s` bounds the whole download, so a server dripping one byte at a time cannot
hold the only deployment slot forever. Redirects are followed only to URLs the policy allows.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

from agent.control.deploy.request import DeployRejected, check_url
from agent.urls import public_url, scrub

CHUNK_BYTES = 64 * 1024
USER_AGENT = "yolo-edge-agent"


class DownloadError(Exception):
    """The download failed; the message is one line naming the URL (without secrets) and what to do."""


@dataclass(frozen=True)
class DownloadLimits:
    """max_bytes: largest file accepted. Times in seconds. allow_http: plain http:// too."""

    max_bytes: int
    timeout_s: float = 30.0
    max_duration_s: float = 900.0
    allow_http: bool = False


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    bytes: int


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the policy allows (no https -> http downgrade, no file://)."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http
        self.followed: list[str] = []  # a redirect's URL can be signed too: errors are scrubbed of these

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        self.followed.append(newurl)
        try:
            check_url(newurl, self.allow_http)
        except DeployRejected as error:
            raise DownloadError(f"redirected to a URL that is not allowed: {error}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _request(url: str) -> urllib.request.Request:
    """A GET for `url`; user:password in it becomes Basic authentication (urllib does not read it from the URL).

    The header is "unredirected": a redirect to another server does not get the password.
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"  # an IPv6 address
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=netloc)), headers={"User-Agent": USER_AGENT})
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def download(url: str, dest: Path, limits: DownloadLimits, cancel: threading.Event | None = None) -> Downloaded:
    """Stream `url` into the new file `dest` (it must not exist); removed again on any failure."""
    try:
        check_url(url, limits.allow_http)
    except DeployRejected as error:
        raise DownloadError(str(error)) from None
    with open(dest, "xb") as out:
        try:
            digest, received = _stream(url, out, limits, cancel)
        except BaseException:
            out.close()
            dest.unlink(missing_ok=True)
            raise
    return Downloaded(dest, digest, received)


def _stream(url: str, out: BinaryIO, limits: DownloadLimits, cancel: threading.Event | None) -> tuple[str, int]:
    """(sha256, bytes) of what `url` sent, written to `out`; DownloadError naming the URL (no secrets) otherwise.

    The messages quote the exceptions of http.client and urllib, which may hold the URL or its query
    (InvalidURL does): every one is scrubbed of the URL's secrets and of those of the redirects followed.
    """
    redirects = _CheckedRedirects(limits.allow_http)
    try:
        return _fetch(url, out, limits, cancel, redirects)
    except DownloadError as error:
        raise DownloadError(scrub(str(error), url, *redirects.followed)) from None


def _fetch(
    url: str, out: BinaryIO, limits: DownloadLimits, cancel: threading.Event | None, redirects: _CheckedRedirects
) -> tuple[str, int]:
    shown = public_url(url)
    opener = urllib.request.build_opener(redirects)
    request = _request(url)
    deadline = time.monotonic() + limits.max_duration_s
    digest, received = hashlib.sha256(), 0
    try:
        with opener.open(request, timeout=limits.timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
                raise DownloadError(
                    f"{shown} is {int(declared)} bytes; at most {limits.max_bytes} allowed ([deploy] max_bytes)"
                )
            # read1: at most one read from the socket, so the deadline and cancel are checked often.
            while chunk := response.read1(CHUNK_BYTES):
                received += len(chunk)
                if received > limits.max_bytes:
                    raise DownloadError(
                        f"{shown} is larger than {limits.max_bytes} bytes ([deploy] max_bytes); download stopped"
                    )
                if time.monotonic() > deadline:
                    raise DownloadError(
                        f"{shown} took longer than {limits.max_duration_s:g} s ([deploy] max_duration_s); "
                        "download stopped"
                    )
                if cancel is not None and cancel.is_set():
                    raise DownloadError(f"download of {shown} cancelled: the agent is stopping")
                digest.update(chunk)
                out.write(chunk)
            if declared is not None and declared.isdigit() and received != int(declared):
                raise DownloadError(f"{shown}: the connection closed after {received} of {declared} bytes; try again")
        out.flush()
        os.fsync(out.fileno())
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{shown}: the server answered HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise DownloadError(f"cannot download {shown}: {error.reason}") from None
    except TimeoutError:
        raise DownloadError(f"{shown}: no data for {limits.timeout_s:g} s ([deploy] timeout_s)") from None
    except http.client.HTTPException as error:  # a cut-off body, a bad status line, InvalidURL (a space in the URL)
        raise DownloadError(f"cannot download {shown}: {type(error).__name__}: {error}") from None
    except OSError as error:  # connection reset, disk full
        raise DownloadError(f"cannot download {shown}: {error.strerror or error}") from None
    return digest.hexdigest(), received
