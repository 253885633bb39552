"""/metrics over the fleet's HTTP server (fleet/http_server.py): the dashboard's limits on connections and time.

prometheus_client's own start_http_server gives every connection a thread with no time limit, so the
exporter uses its request handler (content negotiation, gzip) on our server instead. Only /metrics is
answered: any other path is a 404 that says where the metrics are.
"""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import urlsplit

from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from fleet.http_server import DEFAULT_LIMITS, LimitedHTTPServer, Limits

__all__ = ["METRICS_PATH", "metrics_server"]

METRICS_PATH = "/metrics"
_NOT_HERE = f"not found: the metrics are on {METRICS_PATH}\n".encode()


def metrics_server(host: str, port: int, registry: Collector, limits: Limits = DEFAULT_LIMITS) -> LimitedHTTPServer:
    """The server of `registry`'s metrics on (host, port), not started; OSError when it cannot listen."""
    base = MetricsHandler.factory(registry)

    class Handler(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:
            if urlsplit(self.path).path == METRICS_PATH:
                super().do_GET()
                return
            self.send_response(HTTPStatus.NOT_FOUND)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(_NOT_HERE)))
            self.end_headers()
            self.wfile.write(_NOT_HERE)

    return LimitedHTTPServer(host, port, Handler, limits)
