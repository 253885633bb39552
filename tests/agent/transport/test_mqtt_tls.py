"""MQTT over TLS against a real Mosquitto, with certificates openssl makes once per test session.

The broker listens three ways on 127.0.0.1: plain (for the observer), TLS, and TLS that requires
a client certificate. The broker's certificate names only `localhost`, so connecting to
127.0.0.1 is the host-name mismatch.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.transport.client import probe_broker
from agent.transport.connection import MqttSettings
from agent.transport.mqtt import MqttPublisher
from agent.transport.operator import MqttSession
from agent.transport.outbox import Outbox
from tests.agent.agent_process import agent_env, broker_args, run_agent
from tests.agent.transport.test_mqtt import EVENTS, PREFIX, STATS, Observer, broker_log_count, seqs, wait_until
from tests.broker import Broker, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is missing; `make test` installs it")

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
# Python's stricter X.509 checks want these on a leaf certificate; the name is what the client checks.
LEAF_EXTENSIONS = "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid,issuer\nsubjectAltName=DNS:localhost\n"


@dataclass(frozen=True)
class Pki:
    """A CA, the broker's certificate (for `localhost`), a client certificate, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@dataclass(frozen=True)
class TlsBroker:
    broker: Broker
    tls_port: int
    mutual_port: int  # TLS with require_certificate


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl("req", "-x509", *EC_KEY, "-days", "2", "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
    return cert, key


def issue(directory: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate for `name`, signed by `ca`."""
    key, request, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    extensions = directory / f"{name}.ext"
    extensions.write_text(LEAF_EXTENSIONS)
    openssl("req", "-new", *EC_KEY, "-subj", f"/CN={name}", "-keyout", key, "-out", request)
    openssl(
        *("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2"),
        *("-extfile", extensions, "-out", cert),
    )
    return cert, key


@pytest.fixture(scope="session")
def pki() -> Iterator[Pki]:
    # Mosquitto started as root drops to its own user before it reads these, and pytest's own
    # temporary tree is private to root: so a directory of its own that others may read.
    directory = Path(tempfile.mkdtemp(prefix="yolo-edge-test-pki-"))
    try:
        directory.chmod(0o755)
        ca = make_ca(directory, "yolo-edge-test-ca")
        server = issue(directory, "localhost", ca)
        client = issue(directory, "cam1", ca)
        other_ca, _ = make_ca(directory, "someone-else-ca")
        for path in directory.iterdir():
            path.chmod(0o644)
        yield Pki(ca[0], *server, *client, other_ca)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    tls_port, mutual_port = free_port(), free_port()
    files = f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
    extra = f"listener {tls_port} 127.0.0.1\n{files}listener {mutual_port} 127.0.0.1\n{files}require_certificate true\n"
    broker = Broker(tmp_path, extra_config=extra).start()
    try:
        # start() waits for the plain listener alone; Mosquitto opens the others after it.
        for port in (tls_port, mutual_port):
            wait_listening(broker, port)
        yield TlsBroker(broker, tls_port, mutual_port)
    finally:
        broker.stop()


def wait_listening(broker: Broker, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((broker.host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"Mosquitto did not listen on {port} within {timeout_s:g} s") from None
            time.sleep(0.02)


@pytest.fixture
def observer(tls_broker: TlsBroker) -> Iterator[Observer]:
    watching = Observer(tls_broker.broker)
    yield watching
    watching.close()


@pytest.fixture
def publishers(tmp_path: Path) -> Iterator[Callable[[MqttSettings], MqttPublisher]]:
    made: list[tuple[MqttPublisher, Outbox]] = []

    def make(settings: MqttSettings) -> MqttPublisher:
        outbox = Outbox(tmp_path / f"outbox-{len(made)}.sqlite3")
        made.append((MqttPublisher(settings, outbox).start(), outbox))
        return made[-1][0]

    yield make
    for publisher, outbox in made:
        publisher.close(timeout=0.2)
        outbox.close()


def tls_settings(port: int, host: str = "localhost", **overrides: object) -> MqttSettings:
    values: dict = {"keepalive": 10, "reconnect_max_s": 1.0} | overrides
    return MqttSettings(host=host, port=port, topic_prefix=PREFIX, client_id="cam1", **values)


def send_events(publisher: MqttPublisher, count: int) -> None:
    for _ in range(count):
        publisher.publish_sequenced("events", lambda seq: json.dumps({"seq": seq}).encode())


def test_events_arrive_over_tls_verified_against_the_ca(tls_broker, pki, observer, publishers) -> None:
    settings = tls_settings(tls_broker.tls_port, tls_ca=pki.ca)
    probe_broker(settings, timeout_s=5)
    send_events(publishers(settings), 5)
    assert seqs(observer.wait_count(EVENTS, 5)) == [1, 2, 3, 4, 5]


def test_a_client_certificate_opens_the_listener_that_requires_one(tls_broker, pki, observer, publishers) -> None:
    settings = tls_settings(tls_broker.mutual_port, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    probe_broker(settings, timeout_s=5)
    send_events(publishers(settings), 3)
    assert seqs(observer.wait_count(EVENTS, 3)) == [1, 2, 3]


def test_without_a_client_certificate_the_refusal_says_what_is_missing(tls_broker, pki) -> None:
    with pytest.raises(ConnectionError) as refused:
        probe_broker(tls_settings(tls_broker.mutual_port, tls_ca=pki.ca), timeout_s=5)
    assert f"localhost:{tls_broker.mutual_port}" in str(refused.value)
    assert "client certificate" in str(refused.value), refused.value


def test_a_certificate_from_another_ca_is_rejected_naming_tls_ca(tls_broker, pki) -> None:
    with pytest.raises(ConnectionError) as refused:
        probe_broker(tls_settings(tls_broker.tls_port, tls_ca=pki.other_ca), timeout_s=5)
    message = str(refused.value)
    assert "certificate was rejected" in message and f"tls_ca {pki.other_ca}" in message, message


def test_a_host_name_the_certificate_lacks_is_rejected_unless_tls_insecure(tls_broker, pki) -> None:
    with pytest.raises(ConnectionError) as refused:
        probe_broker(tls_settings(tls_broker.tls_port, host="127.0.0.1", tls_ca=pki.ca), timeout_s=5)
    assert "host 127.0.0.1" in str(refused.value) and "tls_insecure" in str(refused.value), refused.value
    probe_broker(tls_settings(tls_broker.tls_port, host="127.0.0.1", tls_ca=pki.ca, tls_insecure=True), timeout_s=5)


def test_a_file_that_is_not_a_certificate_fails_with_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "ca.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConnectionError) as refused:
        MqttPublisher(tls_settings(free_port(), tls_ca=junk), Outbox(tmp_path / "outbox.sqlite3"))
    assert f"[mqtt] tls_ca {junk}" in str(refused.value) and "PEM" in str(refused.value), refused.value


@pytest.mark.parametrize(
    ("case", "expected", "attempt"),
    [
        ("other CA", "certificate was rejected", "alert unknown ca"),
        ("no client certificate", "set [mqtt] tls_cert and tls_key", "peer did not return a certificate"),
    ],
)
def test_a_running_publisher_logs_why_tls_fails_and_keeps_the_events(
    tls_broker, pki, observer, publishers, caplog, case: str, expected: str, attempt: str
) -> None:
    """The agent does not stop for a TLS failure: it says why once, keeps retrying, and keeps the events."""
    caplog.set_level(logging.WARNING, logger="yolo_edge.mqtt")
    if case == "other CA":
        settings = tls_settings(tls_broker.tls_port, tls_ca=pki.other_ca)
    else:  # TLS 1.3: the handshake seems to succeed, then the broker hangs up
        settings = tls_settings(tls_broker.mutual_port, tls_ca=pki.ca)
    publisher = publishers(settings)
    send_events(publisher, 2)
    wait_until("the warning", lambda: expected in caplog.text)
    # Retries counted in the broker's log (`attempt`: one line per failed handshake), not assumed from
    # the clock (the first retry may come 2 s after the first attempt). The third attempt begins only
    # after the publisher has handled the second failure, and whatever it logs for it.
    wait_until("three failed attempts", lambda: broker_log_count(tls_broker.broker, attempt) >= 3, timeout=15.0)
    assert not publisher.health().connected
    assert caplog.text.count("cannot reach") == 1, "one line per failure streak, not one per retry"
    assert publisher.health().outbox_pending == 2, "the events wait in the outbox"
    assert observer.on(EVENTS) == []


def test_the_agent_command_runs_over_tls(tmp_path, tls_broker, pki, observer, sample_video, fixture_bundle) -> None:
    env = agent_env(tmp_path / "state", mqtt_tls_ca=pki.ca)
    args = ["run", "--source", str(sample_video[0]), "--model", str(fixture_bundle), "--max-frames", "10"]
    result = run_agent([*args, *broker_args("localhost", tls_broker.tls_port, "cam1")], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "connected to localhost" in result.stderr, result.stderr
    final = json.loads(observer.wait_count(STATS, 1)[-1])
    assert final["frames"]["processed"] == 10, final


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("other CA", "certificate was rejected"),
        ("no client certificate", "closed the connection before accepting it; if the broker requires a client"),
        ("client certificate", None),
    ],
)
def test_the_fleet_tool_connects_like_the_agent_and_says_why_not(tls_broker, pki, case: str, expected) -> None:
    if case == "other CA":
        settings = tls_settings(tls_broker.tls_port, tls_ca=pki.other_ca)
    elif case == "no client certificate":
        settings = tls_settings(tls_broker.mutual_port, tls_ca=pki.ca)
    else:
        settings = tls_settings(tls_broker.mutual_port, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    client = MqttSession(settings, timeout=5)
    try:
        if expected is None:
            client.connect()
        else:
            with pytest.raises(ConnectionError, match=re.escape(expected)):
                client.connect()
    finally:
        client.close()
