"""`yolo-edge-fleet dashboard`: serve the static web app in fleet/dashboard/ and tell it where the broker is.

The server is only a file server: the page connects to the broker itself (MQTT over WebSockets), so
no message goes through this process. Besides the files it serves `/config.json`, the broker's
WebSocket URL and the topic prefix; credentials are typed into the page and never reach this server,
nor anything it serves. Files outside the folder, and the folder's own tooling (the vendor script),
are a 404.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.config import ConfigError, load_config
from agent.urls import shown_uri
from fleet.http_server import DEFAULT_LIMITS, LimitedHTTPServer, Limits

STATIC_DIR = Path(__file__).resolve().parent / "dashboard"
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_WS_PORT = 9001  # systemd/mosquitto-yolo-edge.conf's WebSocket listener
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".md": "text/plain; charset=utf-8",
}
# Only what the page is made of: the folder's refresh script and any stray file are not served.
SERVED_SUFFIXES = frozenset(CONTENT_TYPES) - {".json"}
# The page talks to the broker it is told about and loads nothing from anywhere else.
# mqtt.js runs its keepalive timer in a worker made from a blob: URL (browsers slow timers in background tabs).
CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' blob: data:; worker-src 'self' blob:; "
    "object-src 'none'"
)


@dataclass(frozen=True)
class PageConfig:
    """What /config.json says: where the page's MQTT connection goes. Never a user name or password."""

    broker_ws: str
    prefix: str

    def as_json(self) -> bytes:
        return json.dumps({"broker_ws": self.broker_ws, "prefix": self.prefix}).encode()


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `:PORT`, all interfaces) -> (host, port); ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_broker_ws(url: str) -> str:
    """A ws:// or wss:// URL without credentials (the page gets it as it is)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        shown = shown_uri(url)  # without the password or query a mistyped URL may hold
        raise ValueError(f"--broker-ws {shown!r} is not a ws:// or wss:// URL (e.g. ws://broker:{DEFAULT_WS_PORT})")
    if parts.username is not None or parts.password is not None:
        raise ValueError("--broker-ws must not hold a user name or password: type them into the page")
    return url


def _static_file(url_path: str) -> Path | None:
    """The file under STATIC_DIR that `url_path` names, or None (outside the folder, missing, not page material)."""
    relative = unquote(urlsplit(url_path).path).lstrip("/") or "index.html"
    try:
        candidate = (STATIC_DIR / relative).resolve()
        if not candidate.is_relative_to(STATIC_DIR) or not candidate.is_file():
            return None
    except (ValueError, OSError):  # a NUL byte (/%00), a name too long: no file of the page
        return None
    return candidate if candidate.suffix in SERVED_SUFFIXES else None


def make_handler(config: PageConfig) -> type[BaseHTTPRequestHandler]:
    body = config.as_json()

    class Handler(BaseHTTPRequestHandler):
        server_version = "yolo-edge-dashboard"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:
            pass  # a page load is a dozen requests: nothing worth a log line each

        def _send(self, status: HTTPStatus, content_type: str, data: bytes, head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def do_GET(self, head: bool = False) -> None:
            if urlsplit(self.path).path == "/config.json":
                self._send(HTTPStatus.OK, CONTENT_TYPES[".json"], body, head)
                return
            path = _static_file(self.path)
            if path is None:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", head)
                return
            self._send(HTTPStatus.OK, CONTENT_TYPES[path.suffix], path.read_bytes(), head)

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

    return Handler


class DashboardServer:
    """The HTTP server on (host, port); port 0 picks a free one (`address` says which). limits: fleet/http_server.py."""

    def __init__(self, host: str, port: int, config: PageConfig, limits: Limits = DEFAULT_LIMITS) -> None:
        self._server = LimitedHTTPServer(host, port, make_handler(config), limits)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> DashboardServer:
        """Serve on a background thread (tests)."""
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


def add_dashboard_parser(actions: argparse._SubParsersAction) -> None:
    """`dashboard` on the fleet command's actions. Only where the broker is: the page logs in by itself."""
    parser = actions.add_parser("dashboard", help="serve the live web dashboard (the page talks MQTT to the broker)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve the page on ({DEFAULT_LISTEN})")
    parser.add_argument(
        "--broker-ws",
        help=f"the broker's MQTT-over-WebSocket URL for the page (default ws://<[mqtt] host>:{DEFAULT_WS_PORT}, the "
        "first node's host with several)",
    )
    quiet = argparse.SUPPRESS  # as the other actions: given before or after `dashboard`
    parser.add_argument("--config", type=Path, default=quiet, help="the agent's TOML config (its [mqtt] host, prefix)")
    parser.add_argument(
        "--host", "--mqtt-host", dest="host", action="append", default=quiet, help="the broker's host name"
    )
    parser.add_argument("--prefix", default=quiet, help="topic prefix (default yolo-edge)")


def command_dashboard(args: argparse.Namespace, prog: str) -> int:
    """Serve until interrupted; a bad flag, config or a port in use is one line on stderr and exit code 2."""
    try:
        overrides = {("mqtt", "prefix"): getattr(args, "prefix", None)}
        if getattr(args, "host", None) is not None:  # replaces the config's host or hosts, as in the other actions
            overrides["mqtt", "hosts"] = ",".join(args.host)
        mqtt = load_config(getattr(args, "config", None), overrides=overrides, require_model=False).mqtt
        prefix = mqtt.prefix
        # The page connects to one WebSocket URL: the first node's, unless given.
        broker_ws = check_broker_ws(args.broker_ws or f"ws://{mqtt.nodes[0][0]}:{DEFAULT_WS_PORT}")
        host, port = parse_listen(args.listen)
        server = DashboardServer(host, port, PageConfig(broker_ws, prefix))
    except ValueError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(f"{prog}: config error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{prog}: cannot listen on {args.listen}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"{prog}: dashboard on {server.url} (broker {broker_ws}, prefix {prefix}); Ctrl-C stops", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
