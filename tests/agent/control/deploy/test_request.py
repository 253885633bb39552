"""The `deploy` command: what is accepted, and one line naming the problem for everything else."""

from __future__ import annotations

import json
import random

import pytest

from agent.control.deploy.request import DeployRejected, DeployRequest, parse_deploy, public_url, state_payload

SHA = "ab" * 32


def test_a_good_command() -> None:
    request = parse_deploy(json.dumps({"url": "https://h/b.tar.gz", "sha256": SHA.upper()}).encode(), False)
    assert request == DeployRequest("https://h/b.tar.gz", SHA), "the sha256 is compared in lowercase"
    idn = parse_deploy(json.dumps({"url": "https://bücher.example/b.tar.gz", "sha256": SHA}).encode(), False)
    assert idn.url == "https://bücher.example/b.tar.gz", "a host name in Unicode is urllib's to encode (IDNA)"


def test_http_only_when_allowed() -> None:
    payload = json.dumps({"url": "http://lan:8000/b.tar.gz", "sha256": SHA}).encode()
    assert parse_deploy(payload, allow_http=True).url == "http://lan:8000/b.tar.gz"
    with pytest.raises(
        DeployRejected, match=r"scheme 'http' is not allowed; expected https; set \[deploy\] allow_http"
    ):
        parse_deploy(payload, allow_http=False)


BAD: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"url": ', "payload is not valid JSON"),
    ("empty", b"", "payload is not valid JSON"),
    ("binary junk", random.Random(5).randbytes(4096), "payload is not"),
    ("too deep", b"[" * 8_000 + b"]" * 8_000, "nested too deeply"),
    ("huge", b'{"url": "' + b"a" * 20_000 + b'"}', "bytes; at most 16384 allowed"),
    ("not an object", b'["https://h/b.tar.gz"]', "must be a JSON object"),
    ("missing sha256", b'{"url": "https://h/b.tar.gz"}', "missing key 'sha256'"),
    ("missing both", b"{}", "missing key 'url'; missing key 'sha256'"),
    ("unknown key", b'{"url": "https://h/b", "sha256": "' + SHA.encode() + b'", "force": true}', 'unknown key "force"'),
    ("url not a string", b'{"url": 5, "sha256": "' + SHA.encode() + b'"}', "url: 5 is not allowed"),
    ("url too long", b'{"url": "https://h/' + b"a" * 3000 + b'", "sha256": "' + SHA.encode() + b'"}', "at most 2048"),
    ("file url", b'{"url": "file:///etc/passwd", "sha256": "' + SHA.encode() + b'"}', "scheme 'file' is not allowed"),
    ("no host", b'{"url": "https:///b", "sha256": "' + SHA.encode() + b'"}', "has no host"),
    ("short sha256", b'{"url": "https://h/b", "sha256": "abc"}', 'sha256: "abc" is not allowed; expected 64 hex'),
    ("sha256 not hex", b'{"url": "https://h/b", "sha256": "' + b"z" * 64 + b'"}', "expected 64 hex digits"),
    ("sha256 a number", b'{"url": "https://h/b", "sha256": 12}', "sha256: 12 is not allowed"),
    # Valid JSON, but no text: a lone surrogate (the password's is not shown either)
    ("surrogate in url", b'{"url": "https://h/\\ud800", "sha256": "' + SHA.encode() + b'"}', "not valid text"),
    ("surrogate in password", b'{"url": "https://u:\\udfff@h/b", "sha256": "' + SHA.encode() + b'"}', '"https://h/b"'),
    (
        "raw non-ASCII path",
        '{"url": "https://h/modèle", "sha256": "SHA"}'.replace("SHA", SHA).encode(),
        "percent-encoded",
    ),
]


@pytest.mark.parametrize(("what", "payload", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_commands_are_rejected_naming_the_problem(what: str, payload: bytes, fragment: str) -> None:
    with pytest.raises(DeployRejected) as caught:
        parse_deploy(payload, allow_http=False)
    message = str(caught.value)
    assert fragment in message, message
    assert "\n" not in message and len(message) < 1000


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@h.lan:8443/x/b.tar.gz?X-Amz-Signature=s3cret#frag", "https://h.lan:8443/x/b.tar.gz"),
        ("http://h/b.tar.gz", "http://h/b.tar.gz"),
    ],
)
def test_published_urls_carry_no_secrets(url: str, shown: str) -> None:
    assert public_url(url) == shown
    body = state_payload("downloading", DeployRequest(url, SHA))
    assert body["url"] == shown and body["sha256"] == SHA and body["state"] == "downloading"
    assert isinstance(body["ts"], float)


def test_state_payload_with_reason_and_extras() -> None:
    body = state_payload("failed", None, "busy", model={"name": "m"})
    assert body["reason"] == "busy" and body["model"] == {"name": "m"} and "sha256" not in body


def test_a_deploy_request_id_is_kept_and_comes_back_in_every_state() -> None:
    request = parse_deploy(
        json.dumps({"url": "https://h/a.tar.gz", "sha256": "a" * 64, "request_id": "d-1"}).encode(), False
    )
    assert request.request_id == "d-1"
    assert state_payload("downloading", request)["request_id"] == "d-1"
    assert "request_id" not in state_payload(
        "downloading", parse_deploy(json.dumps({"url": "https://h/a.tar.gz", "sha256": "a" * 64}).encode(), False)
    )
