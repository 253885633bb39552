"""`yolo-edge-fleet exporter [--listen 127.0.0.1:9108]`: every device on the broker as Prometheus metrics.

Binds the HTTP port, connects and subscribes to every device's retained `status`, `stats` and
`zones` (failing with one line if either is impossible), then serves /metrics until SIGTERM or
Ctrl-C. prometheus_client comes with the `[fleet]` extra only (the Pi's install has no use for
it), so it is imported here, when the exporter really runs.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import ConfigError, MqttConfig

__all__ = ["DEFAULT_LISTEN", "Listen", "add_exporter_parser", "command_exporter", "parse_listen"]

log = logging.getLogger("yolo_edge.exporter")

DEFAULT_LISTEN = "127.0.0.1:9108"  # 9108: free in Prometheus' list of default exporter ports at the time of writing
CONNECT_TIMEOUT_S = 5.0
EXIT_USAGE = 2
_LISTEN_RE = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


def parse_listen(text: str) -> Listen:
    """HOST:PORT, [IPv6]:PORT, or :PORT for every interface; ValueError with one line otherwise."""
    match = _LISTEN_RE.fullmatch(text.strip())
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise ValueError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:9108, or :9108 for every interface)")
    return Listen(match["v6"] or match["host"] or "0.0.0.0", port)


def add_exporter_parser(actions: argparse._SubParsersAction, broker_options: Callable[..., None]) -> None:
    exporter = actions.add_parser(
        "exporter",
        help="serve every device's stats as Prometheus metrics",
        description="Serve every device's retained status, stats and zones as Prometheus metrics on /metrics.",
    )
    exporter.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT to serve /metrics on ({DEFAULT_LISTEN}; :9108 for every interface)",
    )
    broker_options(exporter, listing=False)


def command_exporter(args: argparse.Namespace, prog: str, load_mqtt: Callable[[argparse.Namespace], MqttConfig]) -> int:
    """Run the exporter until SIGTERM or SIGINT; 2 with one line on stderr for what a user can get wrong."""
    try:
        import prometheus_client  # noqa: F401 - the check that the extra is installed
    except ImportError:
        print(
            f"{prog}: the exporter needs prometheus_client: install the [fleet] extra "
            "(pip install 'yolo-edge[fleet]', or pip install -e '.[fleet]' in a checkout)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        listen = parse_listen(args.listen)
        mqtt = load_mqtt(args)
    except ValueError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"{prog}: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging()
    return _serve(listen, mqtt, prog)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _serve(listen: Listen, mqtt: MqttConfig, prog: str) -> int:
    from prometheus_client import CollectorRegistry, ProcessCollector

    from agent.transport.operator import Subscriber
    from fleet.client import fleet_settings
    from fleet.exporter.endpoint import metrics_server
    from fleet.exporter.metrics import FleetCollector
    from fleet.exporter.state import TOPICS, FleetState

    state = FleetState(mqtt.prefix)
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    ProcessCollector(registry=registry)  # the exporter's own CPU and memory, as process_*
    try:
        server = metrics_server(listen.host, listen.port, registry).start()
    except OSError as error:
        print(f"{prog}: cannot listen on {listen.host}:{listen.port}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    topics = [f"{mqtt.prefix}/+/{kind}" for kind in TOPICS]
    try:
        with Subscriber(fleet_settings(mqtt), topics, state.handle, state.set_connected, CONNECT_TIMEOUT_S) as sub:
            log.info("serving %s: every device under %s/ on %s", listen.url(), mqtt.prefix, sub.where)
            stop.wait()
            log.info("stopping")
    except ConnectionError as error:
        print(f"{prog}: broker error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return 0
