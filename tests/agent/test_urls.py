"""The one URL reduction of the agent, and the scrubbing of exception texts that quote a URL."""

from __future__ import annotations

import http.client

import pytest

from agent.urls import public_url, scrub, shown_uri, traceback_text

SIGNED = "https://user:pa55word@h.lan:8443/x/b.tar.gz?X-Amz-Signature=s3cret&X-Amz-Expires=60#frag"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SIGNED, "https://h.lan:8443/x/b.tar.gz"),
        ("rtsp://user:pw@cam/stream?token=SECRET", "rtsp://cam/stream"),
        ("rtsp://user@cam:554/s", "rtsp://cam:554/s"),
        ("http://[::1]:8080/a b.tar.gz?token=SECRET", "http://[::1]:8080/a b.tar.gz"),
        ("http://h/b.tar.gz", "http://h/b.tar.gz"),
        # urlsplit refuses these (a port that is no number, a bracket left open): cut by hand.
        ("rtsp://user:pw@cam:port/s?token=SECRET", "rtsp://cam:port/s"),
        ("http://user:pw@[::1/s?token=SECRET#f", "http://[::1/s"),
    ],
)
def test_public_url_keeps_scheme_host_port_and_path_only(url: str, shown: str) -> None:
    assert public_url(url) == shown


def test_shown_uri_reduces_urls_and_leaves_paths() -> None:
    assert shown_uri("rtmp://u:pw@h/live?token=SECRET") == "rtmp://h/live"
    assert shown_uri("/videos/what?.mp4") == "/videos/what?.mp4"
    assert shown_uri("0") == "0"


def test_scrub_takes_the_url_and_its_pieces_out_of_a_message() -> None:
    text = (
        f"failed on {SIGNED}; request target '/x/b.tar.gz?X-Amz-Signature=s3cret&X-Amz-Expires=60'; "
        "auth user:pa55word@h.lan; the password pa55word; fragment #frag"
    )
    scrubbed = scrub(text, SIGNED)
    for secret in ("s3cret", "pa55word", "user:", "#frag", "X-Amz-Expires"):
        assert secret not in scrubbed, scrubbed
    assert "failed on https://h.lan:8443/x/b.tar.gz;" in scrubbed
    assert "request target '/x/b.tar.gz'" in scrubbed


def test_scrub_covers_what_http_client_puts_in_invalid_url() -> None:
    url = "http://127.0.0.1:1/a b.tar.gz?token=SECRET\tx"
    with pytest.raises(http.client.InvalidURL) as caught:
        http.client.HTTPConnection("127.0.0.1", 1).putrequest("GET", url.split(":1", 1)[1])
    assert "SECRET" in str(caught.value), "http.client quotes the query: the case this test is about"
    scrubbed = scrub(str(caught.value), url)
    assert "SECRET" not in scrubbed and "/a b.tar.gz" in scrubbed, scrubbed
    assert "SECRET" not in scrub(traceback_text(caught.value), url)


def test_scrub_leaves_short_pieces_inside_words_alone() -> None:
    # "pw" and "a=1" are secrets only where the URL's syntax marks them: elsewhere they are letters.
    url = "rtsp://u:pw@cam/s?a=1"
    assert scrub("cannot open rtsp://u:pw@cam/s?a=1 (pwm: a=1)", url) == "cannot open rtsp://cam/s (pwm: a=1)"
