"""The fleet's HTTP server (fleet/http_server.py) against slow and odd clients, for both servers that use it.

The dashboard's server and the exporter's /metrics server run in this process with small limits (a cap
of 16 connections, 2 workers, 1 s to send a request head) and a real HTTP client talks to them over
127.0.0.1. 60 connections send half a request head and wait, as a stalled or hostile client does: a
whole request must still be answered while they are held, no thread may be started for them, and each
must be closed by the server within its timeout. The last test runs the real `yolo-edge-fleet
dashboard` under a file-descriptor limit it reaches.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fleet.dashboard_server import DashboardServer, PageConfig
from fleet.exporter.endpoint import METRICS_PATH, metrics_server
from fleet.exporter.metrics import FleetCollector
from fleet.exporter.state import FleetState
from fleet.http_server import Limits
from tests.agent.agent_process import agent_env
from tests.broker import free_port

LIMITS = Limits(max_connections=16, workers=2, timeout_s=1.0)
HELD = 60
HALF_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: the head never ends
CLOSE_MARGIN_S = 15.0  # past the timeout, for a loaded machine; a server that never closes fails after it


class Served:
    """A server under test: where it listens and the path it answers with 200."""

    def __init__(self, address: tuple[str, int], path: str) -> None:
        self.address = address
        self.url = f"http://{address[0]}:{address[1]}{path}"
        self.base = f"http://{address[0]}:{address[1]}"


@pytest.fixture(scope="module", params=["dashboard", "exporter"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    if request.param == "dashboard":
        server = DashboardServer("127.0.0.1", 0, PageConfig("ws://broker.lan:9001", "yolo-edge"), LIMITS).start()
        path = "/"
    else:
        registry = CollectorRegistry()
        registry.register(FleetCollector(FleetState("yolo-edge")))
        server = metrics_server("127.0.0.1", 0, registry, LIMITS).start()
        path = METRICS_PATH
    try:
        yield Served(server.address, path)
    finally:
        server.stop()


def get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes `sock` before `deadline` (EOF or reset, after whatever it sent first)."""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if not sock.recv(4096):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def hold_half_sent(address: tuple[str, int], count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=5)
        sock.sendall(HALF_HEAD)
        held.append(sock)
    return held


def test_a_nul_byte_in_the_path_is_not_found(served: Served) -> None:
    assert get(served.base + "/%00") in (400, 404)
    assert get(served.url) == 200, "and the server still answers"


def test_half_sent_requests_hold_no_thread_and_are_closed_after_the_timeout(served: Served) -> None:
    assert get(served.url) == 200  # the workers are up
    threads = threading.active_count()
    held = hold_half_sent(served.address, HELD)
    try:
        assert get(served.url) == 200, "a whole request is answered while half-sent ones are held"
        assert threading.active_count() <= threads, "no thread per half-sent request"
        deadline = time.monotonic() + LIMITS.timeout_s + CLOSE_MARGIN_S
        still_open = [n for n, sock in enumerate(held) if not closed_by_server(sock, deadline)]
        assert still_open == [], f"{len(still_open)} half-sent requests still open after the timeout"
    finally:
        for sock in held:
            sock.close()
    assert get(served.url) == 200


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime in clock ticks (USER_HZ, 100 on Linux)


def test_at_the_file_limit_the_dashboard_answers_and_does_not_spin(tmp_path: Path) -> None:
    """40 descriptors for the whole process, 100 half-sent requests: it answers a whole one, idles, logs once."""
    port = free_port()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    code = (
        "import resource, sys; from fleet.cli import main; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (40, {hard})); sys.exit(main(sys.argv[1:]))"
    )
    args = ["dashboard", "--listen", f"127.0.0.1:{port}", "--broker-ws", "ws://broker.lan:9001"]
    err_path = tmp_path / "dashboard.stderr"
    with open(err_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args], stderr=err, env=agent_env(tmp_path), cwd=tmp_path
        )
    url = f"http://127.0.0.1:{port}/"
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while "dashboard on" not in err_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        held = hold_half_sent(("127.0.0.1", port), 100)
        assert get(url) == 200, "a whole request is answered at the file limit"
        window_s = 1.0
        before = _cpu_s(process.pid)
        time.sleep(window_s)  # the measuring window, not a wait for something to happen
        used = _cpu_s(process.pid) - before
        assert used < window_s / 2, f"the server used {used:.2f} s of CPU in {window_s} s while idle"
        assert get(url) == 200
    finally:
        for sock in held:
            sock.close()
        process.terminate()
        process.wait(10)
    stderr = err_path.read_text()
    assert "Traceback" not in stderr, stderr
    assert stderr.count("cannot accept connections: Too many open files") == 1, stderr
