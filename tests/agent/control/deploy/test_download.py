"""Downloading a bundle archive: the size cap while streaming, timeouts, the URL policy, nothing left on failure."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.control.deploy.download import DownloadError, DownloadLimits, download
from tests.agent.deploy_helpers import HttpFiles, Route, sha256

LIMITS = DownloadLimits(max_bytes=1 << 20, timeout_s=2.0, max_duration_s=10.0, allow_http=True)
BODY = os.urandom(300_000)


@pytest.fixture
def files() -> Iterator[HttpFiles]:
    served = HttpFiles()
    yield served
    served.stop()


def fails(tmp_path: Path, url: str, fragment: str, limits: DownloadLimits = LIMITS) -> tuple[str, float]:
    """Download `url`, expect DownloadError containing `fragment`; return the message and how long it took."""
    dest = tmp_path / "archive.tar.gz"
    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        download(url, dest, limits)
    message = str(caught.value)
    assert fragment in message, message
    assert "\n" not in message
    assert not dest.exists(), "a failed download leaves nothing behind"
    return message, time.monotonic() - started


@pytest.mark.parametrize("content_length", [True, False])
def test_a_file_is_downloaded_with_its_sha256(tmp_path: Path, files: HttpFiles, content_length: bool) -> None:
    url = files.add("/b.tar.gz", Route(BODY, content_length=content_length))
    got = download(url, tmp_path / "b.tar.gz", LIMITS)
    assert (got.sha256, got.bytes) == (sha256(BODY), len(BODY))
    assert (tmp_path / "b.tar.gz").read_bytes() == BODY


def test_a_declared_size_over_the_limit_is_refused_before_the_body(tmp_path: Path, files: HttpFiles) -> None:
    gate = threading.Event()  # the body never comes: only the header can have stopped the download
    url = files.add("/big.tar.gz", Route(bytes(LIMITS.max_bytes + 1), gate=gate))
    # This message comes from the header alone: a download that read the body would stop at the gate
    # and end with "no data for ..." instead.
    message, _ = fails(tmp_path, url, f"is {LIMITS.max_bytes + 1} bytes; at most {LIMITS.max_bytes} allowed")
    assert "[deploy] max_bytes" in message


def test_an_undeclared_size_is_cut_off_at_the_limit(tmp_path: Path, files: HttpFiles) -> None:
    # No Content-Length, and far more than the limit: the download must stop at the limit, not at the end.
    gate = threading.Event()
    url = files.add("/endless.tar.gz", Route(bytes(64 << 20), content_length=False, gate=gate))
    fails(tmp_path, url, f"is larger than {LIMITS.max_bytes} bytes ([deploy] max_bytes); download stopped")
    gate.set()


def test_a_server_that_sends_nothing_times_out(tmp_path: Path, files: HttpFiles) -> None:
    stall = Route(BODY, stall_s=20)
    url = files.add("/stall.tar.gz", stall)
    limits = DownloadLimits(LIMITS.max_bytes, timeout_s=0.5, max_duration_s=10, allow_http=True)
    _, took = fails(tmp_path, url, "no data for 0.5 s ([deploy] timeout_s)", limits)
    # Bounds that follow from the setup, however loaded the machine: it waited out timeout_s, and gave
    # up before the server's stall (or max_duration_s) ended.
    assert limits.timeout_s <= took < min(stall.stall_s, limits.max_duration_s)


def test_a_server_that_drips_hits_the_overall_limit(tmp_path: Path, files: HttpFiles) -> None:
    # Each chunk comes well within timeout_s, so only max_duration_s can stop it.
    drip = Route(BODY, drip_s=0.1, chunk=1000)
    url = files.add("/drip.tar.gz", drip)
    limits = DownloadLimits(LIMITS.max_bytes, timeout_s=2.0, max_duration_s=0.5, allow_http=True)
    _, took = fails(tmp_path, url, "took longer than 0.5 s ([deploy] max_duration_s)", limits)
    # Not cut before max_duration_s, and long before the whole body could have dripped in (30 s).
    assert limits.max_duration_s <= took < len(BODY) / drip.chunk * drip.drip_s


@pytest.mark.parametrize(("status", "fragment"), [(404, "HTTP 404"), (500, "HTTP 500"), (403, "HTTP 403")])
def test_http_errors_are_named(tmp_path: Path, files: HttpFiles, status: int, fragment: str) -> None:
    files.add("/x.tar.gz", Route(b"nope", status=status))
    fails(tmp_path, files.url("/x.tar.gz" if status != 404 else "/missing.tar.gz"), fragment)


def test_a_server_that_is_not_there(tmp_path: Path) -> None:
    from tests.broker import free_port

    fails(tmp_path, f"http://127.0.0.1:{free_port()}/b.tar.gz", "cannot download http://127.0.0.1:")


def test_a_body_shorter_than_declared_is_an_error(tmp_path: Path, files: HttpFiles) -> None:
    url = files.add("/short.tar.gz", Route(BODY[:1000], declared_length=len(BODY)))
    fails(tmp_path, url, f"the connection closed after 1000 of {len(BODY)} bytes")


@pytest.mark.parametrize(
    ("url", "allow_http", "fragment"),
    [
        ("http://127.0.0.1/b.tar.gz", False, "scheme 'http' is not allowed; expected https; set [deploy] allow_http"),
        ("file:///etc/passwd", True, "scheme 'file' is not allowed; expected https or http"),
        ("ftp://host/b.tar.gz", True, "scheme 'ftp' is not allowed"),
        ("https:///b.tar.gz", True, "has no host"),
    ],
)
def test_urls_outside_the_policy_are_refused(tmp_path: Path, url: str, allow_http: bool, fragment: str) -> None:
    limits = DownloadLimits(LIMITS.max_bytes, allow_http=allow_http)
    fails(tmp_path, url, fragment, limits)


def test_redirects_are_followed_within_the_policy(tmp_path: Path, files: HttpFiles) -> None:
    target = files.add("/real.tar.gz", BODY)
    url = files.add("/moved.tar.gz", Route(b"", status=302, location=target))
    assert download(url, tmp_path / "b.tar.gz", LIMITS).sha256 == sha256(BODY)


def test_a_redirect_outside_the_policy_is_refused(tmp_path: Path, files: HttpFiles) -> None:
    url = files.add("/sneaky.tar.gz", Route(b"", status=302, location="file:///etc/passwd"))
    fails(tmp_path, url, "not allowed")


def test_a_redirect_from_https_to_http_is_refused() -> None:
    # No TLS server here: the redirect handler is asked directly, as urllib asks it.
    import urllib.request

    from agent.control.deploy.download import _CheckedRedirects

    request = urllib.request.Request("https://example.org/b.tar.gz")
    with pytest.raises(DownloadError, match=r"redirected to a URL that is not allowed: .*scheme 'http'"):
        _CheckedRedirects(allow_http=False).redirect_request(request, None, 302, "Found", {}, "http://evil/b.tar.gz")
    allowed = _CheckedRedirects(allow_http=True).redirect_request(
        request, None, 302, "Found", {}, "http://lan/b.tar.gz"
    )
    assert allowed.full_url == "http://lan/b.tar.gz"


def test_credentials_and_query_stay_out_of_messages(tmp_path: Path, files: HttpFiles) -> None:
    url = files.base.replace("http://", "http://user:s3cret@") + "/missing.tar.gz?token=s3cret"
    message, _ = fails(tmp_path, url, "HTTP 404")
    assert "s3cret" not in message


REFUSED_TARGETS = ["/a b.tar.gz?token=SECRET", "/b.tar.gz?token=SECRET x", "/b.tar.gz?token=SECRET\tx"]


@pytest.mark.parametrize("target", REFUSED_TARGETS)
def test_a_url_http_client_refuses_is_named_without_its_query(tmp_path: Path, files: HttpFiles, target: str) -> None:
    # http.client's InvalidURL quotes the path and query, where signed links carry their token.
    message, _ = fails(tmp_path, files.url(target), "InvalidURL")
    assert "SECRET" not in message and "token" not in message, message
    assert files.url(target.split("?")[0]) in message


def test_credentials_in_the_url_are_sent_as_basic_authentication(tmp_path: Path, files: HttpFiles) -> None:
    files.add("/private.tar.gz", BODY)
    url = files.base.replace("http://", "http://op%40lan:p%3Ass@") + "/private.tar.gz"
    assert download(url, tmp_path / "b.tar.gz", LIMITS).sha256 == sha256(BODY)
    assert files.authorization["/private.tar.gz"] == "Basic " + base64.b64encode(b"op@lan:p:ss").decode()


def test_a_download_is_cancelled_when_the_agent_stops(tmp_path: Path, files: HttpFiles) -> None:
    url = files.add("/slow.tar.gz", Route(BODY, drip_s=0.05, chunk=1000))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(DownloadError, match="cancelled: the agent is stopping"):
        download(url, tmp_path / "b.tar.gz", LIMITS, cancel)
    assert not (tmp_path / "b.tar.gz").exists()


def test_an_existing_file_is_never_overwritten(tmp_path: Path, files: HttpFiles) -> None:
    (tmp_path / "b.tar.gz").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        download(files.add("/b.tar.gz", BODY), tmp_path / "b.tar.gz", LIMITS)
    assert (tmp_path / "b.tar.gz").read_bytes() == b"mine"
