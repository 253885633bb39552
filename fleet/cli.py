"""`yolo-edge-fleet`: the devices on a broker as a table, and one `set` or `deploy` sent to several.

    yolo-edge-fleet [list]                     status, fps, latency, model, outbox, deploy state
    yolo-edge-fleet set DEVICE... --json '{"confidence": 0.5}'
    yolo-edge-fleet deploy DEVICE... --url URL --sha256 HEX
    yolo-edge-fleet dashboard [--listen 127.0.0.1:8080] [--broker-ws ws://HOST:9001]
    yolo-edge-fleet exporter [--listen 127.0.0.1:9108]   Prometheus metrics of every device (fleet/exporter/)

`yolo-edge-agent fleet ...` is the same command under the agent's name (an alias kept for scripts).

Everything comes from what the devices publish retained (`status`, `stats`, `settings`,
`deploy/state`), so the command needs no registry of its own: it subscribes for `--wait`
seconds and reads what the broker holds. The broker connection is the agent's own [mqtt] section
(`--config`, `YOLO_EDGE_MQTT_*`, flags), so one config file serves both, and the password comes
from a file or the environment, never from argv. Exit codes: 0 every device ok, 1 a device
failed or did not answer in time, 2 a usage, config or broker error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import DEVICE_ID_RE, ConfigError, MqttConfig, load_config
from agent.transport import topics
from agent.urls import shown_uri
from fleet.dashboard_server import add_dashboard_parser, command_dashboard
from fleet.exporter.command import add_exporter_parser, command_exporter
from fleet.printable import printable
from fleet.view import (
    LIST_TOPICS,
    DeployState,
    DeviceView,
    Outcome,
    answers_request,
    device_json,
    devices_from,
    devices_table,
    outcome_json,
    outcomes_table,
    parse_deploy_state,
    parse_set_result,
    parse_status,
    split_topic,
)

if TYPE_CHECKING:  # paho is loaded only when a fleet command really runs
    from agent.transport.operator import MqttSession

PROG = "yolo-edge-fleet"
ALIAS_PROG = "yolo-edge-agent fleet"  # the name its error lines carry when run through the agent
EXIT_FAILED = 1
EXIT_USAGE = 2
CONNECT_TIMEOUT_S = 5.0
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


class UsageError(Exception):
    """A mistake in the command line; the message is one line."""


@dataclass(frozen=True)
class Target:
    """Who a command goes to: named devices, or every device whose retained status is `online`."""

    devices: tuple[str, ...]
    all_online: bool


def _connection_options(parser: argparse.ArgumentParser, listing: bool = True) -> None:
    # SUPPRESS: given before or after the action (`fleet --host h set ...` or `fleet set ... --host h`),
    # neither parser's default overwrites what the other one read.
    quiet = argparse.SUPPRESS
    group = parser.add_argument_group("broker (default: --config's [mqtt] section, YOLO_EDGE_MQTT_*)")
    group.add_argument("--config", type=Path, default=quiet, help="the agent's TOML config (its [mqtt] section)")
    group.add_argument(
        "--host",
        "--mqtt-host",
        dest="host",
        action="append",
        default=quiet,
        help="the broker, or a cluster's nodes: HOST[:PORT], repeated or comma separated (the first that answers)",
    )
    group.add_argument("--port", "--mqtt-port", dest="port", type=int, default=quiet)
    group.add_argument("--username", default=quiet)
    group.add_argument("--password-file", type=Path, default=quiet, help="or YOLO_EDGE_MQTT_PASSWORD; never argv")
    group.add_argument("--tls-ca", type=Path, default=quiet, help="CA certificate: turns TLS on")
    group.add_argument("--tls-cert", type=Path, default=quiet)
    group.add_argument("--tls-key", type=Path, default=quiet)
    group.add_argument("--prefix", default=quiet, help="topic prefix (default yolo-edge)")
    if not listing:  # a long-running action: no collection window, no table
        return
    parser.add_argument("--wait", type=float, default=quiet, help="seconds to collect retained messages (2)")
    parser.add_argument("--format", choices=("table", "json"), default=quiet, help="output (table)")


def _targets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("devices", nargs="*", metavar="DEVICE", help="device ids")
    parser.add_argument("--all", action="store_true", help="every device whose status is online")


def _add_actions(parser: argparse.ArgumentParser) -> None:
    """The broker options and the actions (list, set, deploy) on `parser`."""
    _connection_options(parser)
    actions = parser.add_subparsers(dest="action")
    _connection_options(actions.add_parser("list", help="a table of devices (the default)"))
    change = actions.add_parser("set", help="send runtime settings and report each device's set/result")
    _targets(change)
    change.add_argument("--json", required=True, dest="payload", help="settings, e.g. '{\"confidence\": 0.5}'")
    change.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answers (10)")
    _connection_options(change)
    deploy = actions.add_parser("deploy", help="send a bundle archive and follow each device's deploy/state")
    _targets(deploy)
    deploy.add_argument("--url", required=True, help="https:// (or http://) URL of the bundle .tar.gz")
    deploy.add_argument("--sha256", required=True, help="sha256 of the archive (64 hex digits)")
    deploy.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the outcome (300)")
    _connection_options(deploy)
    add_dashboard_parser(actions)
    add_exporter_parser(actions, _connection_options)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="The devices on an MQTT broker: list them, send set or deploy to several."
    )
    _add_actions(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """yolo-edge-fleet, and `yolo-edge-agent fleet` (prog=ALIAS_PROG), which hands its arguments here."""
    return command_fleet(build_parser(prog).parse_args(argv), prog)


def _mqtt_config(args: argparse.Namespace) -> MqttConfig:
    """The [mqtt] section as the agent would read it, with this command's flags on top."""
    keys = ("port", "username", "password_file", "tls_ca", "tls_cert", "tls_key", "prefix")
    overrides = {("mqtt", key): getattr(args, key, None) for key in keys}
    if getattr(args, "host", None) is not None:  # repeated or comma separated: [mqtt] hosts, replacing host(s)
        overrides["mqtt", "hosts"] = ",".join(args.host)
    return load_config(getattr(args, "config", None), overrides=overrides, require_model=False).mqtt


def _target(args: argparse.Namespace) -> Target:
    devices = tuple(dict.fromkeys(args.devices))
    if args.all == bool(devices):
        raise UsageError("name the devices, or give --all (not both)")
    for device in devices:
        if not DEVICE_ID_RE.fullmatch(device):
            raise UsageError(f"device {device!r} is not a device id (letters, digits, _ and - only)")
    return Target(devices, args.all)


def _set_payload(text: str) -> bytes:
    try:
        body = json.loads(text)
    except ValueError as error:
        raise UsageError(f"--json is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise UsageError(f"--json must be a JSON object of settings, got {type(body).__name__}")
    body.setdefault("request_id", new_request_id())  # one the user gave is kept: answers are matched by it
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _deploy_payload(url: str, sha256: str) -> bytes:
    if not url.startswith(("https://", "http://")):
        # Shown without user, password or query: a signed link's token must not reach a terminal log.
        raise UsageError(f"--url {shown_uri(url)!r} is not an https:// or http:// URL")
    if not SHA256_RE.fullmatch(sha256):
        raise UsageError(f"--sha256 {sha256!r} is not 64 hex digits")
    body = {"url": url, "sha256": sha256.lower(), "request_id": new_request_id()}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def new_request_id() -> str:
    """A request id no other operator's command carries: answers are told apart by it."""
    return f"fleet-{uuid.uuid4().hex[:20]}"


def _seconds(args: argparse.Namespace, name: str, default: float) -> float:
    value = getattr(args, name, default)
    if not value > 0:
        raise UsageError(f"--{name} {value:g} is not allowed; expected a number of seconds > 0")
    return value


@dataclass(frozen=True)
class Request:
    """One fleet action, checked: payload is what goes to each device's `set` or `deploy` (b"" for list)."""

    action: str
    target: Target
    payload: bytes
    wait: float
    timeout: float


def _request(args: argparse.Namespace) -> Request:
    action = args.action or "list"
    payload, target = b"", Target((), all_online=False)
    if action == "set":
        payload, target = _set_payload(args.payload), _target(args)
    elif action == "deploy":
        payload, target = _deploy_payload(args.url, args.sha256), _target(args)
    return Request(action, target, payload, _seconds(args, "wait", 2.0), _seconds(args, "timeout", 1.0))


def command_fleet(args: argparse.Namespace, prog: str = ALIAS_PROG) -> int:
    """Run one fleet action; every error a user can cause is one line on stderr and exit code 2."""
    if args.action == "dashboard":
        return command_dashboard(args, prog)
    if args.action == "exporter":
        return command_exporter(args, prog, _mqtt_config)
    try:
        request = _request(args)
        mqtt = _mqtt_config(args)
        from fleet.client import fleet_session

        with fleet_session(mqtt, CONNECT_TIMEOUT_S) as client:
            result = _run(client, mqtt.prefix, request)
    except UsageError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"{prog}: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as error:
        print(f"{prog}: broker error: {error}", file=sys.stderr)
        return EXIT_USAGE
    as_json = getattr(args, "format", "table") == "json"
    if request.action == "list":
        views = [r for r in result if isinstance(r, DeviceView)]
        now = time.time()
        if as_json:
            print(json.dumps([device_json(view, now) for view in views], indent=2))
        elif views:
            print(devices_table(views, now))
        else:
            print(f"no devices under {mqtt.prefix}/ (nothing retained within {request.wait:g} s)", file=sys.stderr)
        return 0
    outcomes = [r for r in result if isinstance(r, Outcome)]
    print(json.dumps([outcome_json(o) for o in outcomes], indent=2) if as_json else outcomes_table(outcomes))
    return 0 if all(o.ok for o in outcomes) else EXIT_FAILED


def _run(client: MqttSession, prefix: str, request: Request) -> list[DeviceView] | list[Outcome]:
    """The devices (list) or each device's outcome (set, deploy)."""
    if request.action == "list":
        client.subscribe([f"{prefix}/+/{kind}" for kind in LIST_TOPICS])
        return devices_from(client.messages(time.monotonic() + request.wait), prefix)
    kind = topics.SET_RESULT if request.action == "set" else topics.DEPLOY_STATE
    client.subscribe([f"{prefix}/+/{topics.STATUS}", f"{prefix}/+/{kind}"])
    devices, statuses = _resolve(client, prefix, request.target, request.wait)
    if request.action == "set":
        return _set(client, prefix, devices, request.payload, request.timeout, statuses)
    return _deploy(client, prefix, devices, request.payload, request.timeout, statuses)


def _resolve(client: MqttSession, prefix: str, target: Target, wait: float) -> tuple[list[str], dict[str, str]]:
    """The devices to command and the status of every device seen so far.

    Named devices need no collection window (their statuses are only shown in a timeout's detail,
    and keep coming while the command waits for answers).
    """
    until = time.monotonic() + (wait if target.all_online else 0.0)
    views = devices_from(client.messages(until), prefix)
    statuses = {view.device: view.status or "unknown" for view in views}
    if not target.all_online:
        return list(target.devices), statuses
    online = [view.device for view in views if view.status == "online"]
    if not online:
        raise UsageError(f"--all: no device under {prefix}/ is online on {client.where}")
    return online, statuses


def _progress(device: str, text: str) -> None:
    # stderr: stdout stays the result alone, for scripts. Both parts may come from a device (fleet/printable.py).
    print(printable(f"{device}: {text}"), file=sys.stderr, flush=True)


def _timed_out(device: str, timeout: float, statuses: dict[str, str]) -> Outcome:
    status = statuses.get(device, "never seen on this broker")
    return Outcome(device, False, "timeout", f"no answer within {timeout:g} s (status {status})")


def _set(
    client: MqttSession, prefix: str, devices: list[str], payload: bytes, timeout: float, statuses: dict[str, str]
) -> list[Outcome]:
    """Publish `set` to each device; each one's first `set/result` that answers it, or a timeout."""
    body = json.loads(payload)
    request_id = body.pop("request_id")
    sent_keys = frozenset(body)
    for device in devices:
        client.publish(topics.device_topic(prefix, device, topics.SET), payload)
    answers: dict[str, Outcome] = {}
    for message in client.messages(time.monotonic() + timeout):
        where = split_topic(message.topic, prefix)
        if where is None:
            continue
        device, kind = where
        if kind == topics.STATUS:
            statuses[device] = parse_status(message.payload)
            continue
        if kind != topics.SET_RESULT or message.retained or device not in devices or device in answers:
            continue
        ours = answers_request(message.payload, request_id, sent_keys)
        outcome = parse_set_result(message.payload) if ours else None
        if outcome is not None:
            answers[device] = replace(outcome, device=device)
            _progress(device, f"{outcome.state} {outcome.detail}")
            if len(answers) == len(devices):
                break
    return [answers.get(device) or _timed_out(device, timeout, statuses) for device in devices]


def _deploy(
    client: MqttSession, prefix: str, devices: list[str], payload: bytes, timeout: float, statuses: dict[str, str]
) -> list[Outcome]:
    """Publish `deploy` to each device and follow its `deploy/state` until active, failed or rolled_back."""
    body = json.loads(payload)
    sha256, request_id = body["sha256"], body["request_id"]
    for device in devices:
        client.publish(topics.device_topic(prefix, device, topics.DEPLOY), payload)
        _progress(device, "deploy sent")
    last: dict[str, str] = {}
    done: dict[str, Outcome] = {}
    for message in client.messages(time.monotonic() + timeout):
        where = split_topic(message.topic, prefix)
        if where is not None and where[1] == topics.STATUS:
            statuses[where[0]] = parse_status(message.payload)
        # Retained states are from earlier deploys; a state naming another archive is someone else's.
        if where is None or where[1] != topics.DEPLOY_STATE or message.retained:
            continue
        device, state = where[0], parse_deploy_state(message.payload)
        if device not in devices or device in done or state is None or not _ours(state, request_id, sha256):
            continue
        text = f"{state.state}: {state.reason}" if state.reason else state.state
        if last.get(device) != text:
            last[device] = text
            _progress(device, text)
        if state.done:
            done[device] = Outcome(device, state.state == "active", state.state, state.reason or "")
            if len(done) == len(devices):
                break
    return [done.get(device) or _last_seen(device, timeout, statuses, last) for device in devices]


def _ours(state: DeployState, request_id: str, sha256: str) -> bool:
    """A state answers our deploy when it carries our request id; from an agent before request ids,
    when it names our archive (a retained state from earlier deploys was skipped already)."""
    if state.request_id is not None:
        return state.request_id == request_id
    return (state.sha256 or sha256).lower() == sha256


def _last_seen(device: str, timeout: float, statuses: dict[str, str], last: dict[str, str]) -> Outcome:
    if device not in last:
        return _timed_out(device, timeout, statuses)
    return Outcome(device, False, "timeout", f"still {last[device]} after {timeout:g} s")


if __name__ == "__main__":
    sys.exit(main())
