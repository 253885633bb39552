"""The dashboard's HTTP server: it serves the page and its config, nothing outside its folder, no credentials."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from fleet.cli import main
from fleet.dashboard_server import STATIC_DIR, DashboardServer, PageConfig, check_broker_ws, parse_listen


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[DashboardServer]:
    monkeypatch.setenv("YOLO_EDGE_MQTT_PASSWORD", "top-secret")  # must reach nothing the server serves
    server = DashboardServer("127.0.0.1", 0, PageConfig("ws://broker.lan:9001", "yolo-edge")).start()
    yield server
    server.stop()


def get(server: DashboardServer, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_it_serves_the_page_its_modules_and_the_vendored_libraries(server: DashboardServer) -> None:
    status, headers, body = get(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == (STATIC_DIR / "index.html").read_bytes()
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for path in ("/js/app.js", "/vendor/mqtt.esm.js", "/vendor/uPlot.esm.js"):
        status, headers, body = get(server, path)
        assert status == 200 and headers["Content-Type"].startswith("text/javascript"), path
        assert body
    assert get(server, "/style.css")[1]["Content-Type"].startswith("text/css")


def test_the_config_says_where_the_broker_is_and_holds_no_credentials(server: DashboardServer) -> None:
    status, headers, body = get(server, "/config.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"broker_ws": "ws://broker.lan:9001", "prefix": "yolo-edge"}
    assert b"top-secret" not in body


@pytest.mark.parametrize(
    "path",
    ["/../dashboard_server.py", "/%2e%2e/cli.py", "/..%2f..%2fpyproject.toml", "/refresh-vendor.sh", "/missing.js"],
)
def test_nothing_outside_the_page_is_served(server: DashboardServer, path: str) -> None:
    assert get(server, path)[0] == 404


def test_bad_flags_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen(":8080") == ("0.0.0.0", 8080)
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_listen("8080x")
    assert check_broker_ws("wss://broker:443/mqtt") == "wss://broker:443/mqtt"
    assert main(["dashboard", "--broker-ws", "ws://user:pw@broker:9001"]) == 2
    assert capsys.readouterr().err == (
        "yolo-edge-fleet: --broker-ws must not hold a user name or password: type them into the page\n"
    )
    assert main(["dashboard", "--broker-ws", "http://broker:9001"]) == 2
    assert "is not a ws:// or wss:// URL" in capsys.readouterr().err
    # A wrong scheme with credentials in it: the error names the URL without them.
    assert main(["dashboard", "--broker-ws", "https://op:s3cret-pw@broker:9001/mqtt?token=t0ken-value"]) == 2
    err = capsys.readouterr().err
    assert "'https://broker:9001/mqtt' is not a ws:// or wss:// URL" in err
    assert "s3cret-pw" not in err and "t0ken-value" not in err
