"""A real Mosquitto on a free localhost port: for the tests, which never mock MQTT, and for the broker benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from benchmarks.machine import process_cpu_seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class Broker:
    """Mosquitto bound to 127.0.0.1:port; `stop()` and `start()` again keep the port, like a restarted broker.

    Persistence is off, so a restart loses whatever the broker held: what
    arrives afterwards came from the client's own outbox.

    websockets: also listen for MQTT over WebSockets (what the dashboard's page speaks) on
    127.0.0.1:`ws_port`, a free port unless given.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_config: str = "",
        allow_anonymous: bool = True,
        websockets: bool = False,
        ws_port: int | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.ws_port = (ws_port or free_port()) if websockets else None
        self.workdir = workdir
        self.config_path = workdir / f"mosquitto-{self.port}.conf"
        self.log_path = workdir / f"mosquitto-{self.port}.log"
        # Mosquitto 2 gives each listener its own settings only with per_listener_settings; without it
        # allow_anonymous (and any ACL in extra_config) holds for both listeners alike.
        ws_listener = f"listener {self.ws_port} 127.0.0.1\nprotocol websockets\n" if self.ws_port else ""
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\n{ws_listener}allow_anonymous {str(allow_anonymous).lower()}\n"
            f"persistence false\n{extra_config}"
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 5.0) -> Broker:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed; `make test` installs it with apt")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen([binary, "-c", str(self.config_path)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                for port in filter(None, (self.port, self.ws_port)):
                    with socket.create_connection((self.host, port), timeout=0.2):
                        pass
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-500:]}") from None
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    @property
    def ws_url(self) -> str:
        """ws://127.0.0.1:<ws_port>, the WebSocket listener's URL (only with websockets=True)."""
        if self.ws_port is None:
            raise RuntimeError("this broker has no WebSocket listener; start it with websockets=True")
        return f"ws://{self.host}:{self.ws_port}"

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the running broker has used so far (from /proc), None if it is not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        try:
            return process_cpu_seconds(self.process.pid)
        except OSError:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
