"""The agent's configuration: defaults < TOML file < environment < command line.

Environment overrides are `YOLO_EDGE_<SECTION>_<KEY>` (for example `YOLO_EDGE_MQTT_HOST`). Each key is
declared once, as a dataclass field carrying its default, its type and the rule it must pass (`_key`);
parsing and validation are driven by those fields, so every problem becomes one line naming the key
(or the variable), the value and what is allowed, before anything starts.

The broker password never comes from argv or from the TOML file: argv shows up in `ps` and shell
history, and config files get copied around and committed. It comes from `mqtt.password_file` or
`YOLO_EDGE_MQTT_PASSWORD` only, and lives in a field kept out of repr and `redacted()`.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

ENV_PREFIX = "YOLO_EDGE_"
PASSWORD_ENV = "YOLO_EDGE_MQTT_PASSWORD"
PRECISIONS: tuple[str, ...] = ("auto", "int8", "fp32")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """A configuration problem the user can fix; the message is one line (several joined by '; ')."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def default_device_id(hostname: str | None = None) -> str:
    """The host name reduced to `[A-Za-z0-9_-]` (others become '-'), so it is safe in an MQTT topic."""
    name = socket.gethostname() if hostname is None else hostname
    return re.sub(r"[^A-Za-z0-9_-]", "-", name) or "yolo-edge"


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """`$STATE_DIRECTORY` under systemd, else `~/.local/state/yolo-edge`."""
    # systemd sets a colon-separated list when the unit has several StateDirectory= entries; ours is first.
    first = env.get("STATE_DIRECTORY", "").split(":")[0]
    if first:
        return Path(first)
    return (Path(env["HOME"]) if env.get("HOME") else Path.home()) / ".local" / "state" / "yolo-edge"


_TEXT_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _from_text(kind: str, text: str) -> object:
    """An environment or command-line string as the TOML value it stands for."""
    if kind in ("int", "float", "bool"):
        return {"int": int, "float": float, "bool": lambda s: _TEXT_BOOLS[s.lower()]}[kind](text)
    if kind == "labels":
        return [label.strip() for label in text.split(",") if label.strip()]
    if kind == "thresholds":  # "person=0.5,car=0.3"
        pairs = [part.split("=") for part in text.split(",") if part.strip()]
        return {label.strip(): float(threshold) for label, threshold in pairs}
    return text


def _convert(kind: str, value: object) -> Any:
    """A TOML-typed value as the key's Python type; TypeError or ValueError when it is of the wrong kind."""
    # bool is an int to Python, but `port = true` is a mistake, not port 1.
    if kind in ("bool", "int", "float", "uri") and isinstance(value, bool) != (kind == "bool"):
        raise TypeError
    if kind == "bool" or (kind == "int" and isinstance(value, int)):
        return value
    if kind == "float" and isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # TOML integers have no size limit; floats do
            raise ValueError from None
        if math.isfinite(number):
            return number
    if kind in ("str", "choice") and isinstance(value, str):
        return value.strip().lower() if kind == "choice" else value  # LOG_LEVEL=DEBUG is what people type
    if kind == "uri" and isinstance(value, str | int):
        return str(value)  # `uri = 0` (the first camera) is natural TOML
    if kind == "path" and isinstance(value, str | os.PathLike) and str(value):
        try:
            return Path(value).expanduser()
        except RuntimeError:  # ~name of a user that does not exist
            raise ValueError from None
    if kind == "labels" and isinstance(value, list | tuple) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    if kind == "thresholds" and isinstance(value, Mapping) and all(isinstance(k, str) and k for k in value):
        return MappingProxyType({label: _convert("float", threshold) for label, threshold in value.items()})
    raise TypeError


@dataclass(frozen=True)
class _Spec:
    """How one key is read and what it allows; `expected` completes "... is not allowed; expected ..."."""

    kind: str  # str, choice, uri, int, float, bool, path, labels, thresholds
    expected: str
    check: Callable[[Any], bool]
    optional: bool  # None by default; an empty string from env or command line resets it

    def parse(self, raw: object, text: bool) -> Any:
        """`text`: raw came from the environment or command line, so a string is parsed, not taken as-is."""
        if text and isinstance(raw, str):
            # Stray spaces around a value come from EnvironmentFile= lines and shell quoting, never on purpose.
            if self.optional and not raw.strip():
                return None
            raw = _from_text(self.kind, raw.strip())
        value = _convert(self.kind, raw)
        if not self.check(value):
            raise ValueError
        return value


def _anything(value: object) -> bool:
    return True


def _rule(kind: str, expected: str, check: Callable[[Any], bool] = _anything, optional: bool = False) -> dict:
    """Field metadata saying how a key is parsed and what it allows; optional keys default to None."""
    return {"spec": _Spec(kind, expected, check, optional)}


def _positive(value: float) -> bool:
    return value > 0


def _fraction(value: float) -> bool:
    return 0 < value <= 1


def _topic_prefix(value: str) -> bool:
    return bool(value) and not any(c in value for c in "#+\0") and not value.startswith("/") and not value.endswith("/")


_BOOL = "true or false (1/0, yes/no in the environment)"
_FILE = "an existing, readable file"
_SECONDS = "a number > 0 (seconds)"


@dataclass(frozen=True)
class SourceConfig:
    """[source]: where frames come from. Times in seconds."""

    uri: str = field(
        default="0", metadata=_rule("uri", "a camera index, device path, URL, file, folder or picamera2", bool)
    )
    loop: bool = field(default=False, metadata=_rule("bool", _BOOL))
    fps: float = field(
        default=0.0, metadata=_rule("float", "a number >= 0 (0 = as fast as possible)", lambda v: v >= 0)
    )
    max_frame_age: float = field(default=1.0, metadata=_rule("float", _SECONDS, _positive))
    reconnect_max_s: float = field(default=10.0, metadata=_rule("float", _SECONDS, _positive))


@dataclass(frozen=True)
class ModelConfig:
    """[model]: which model runs and which detections survive. `path` is None only when not required."""

    path: Path | None = field(
        default=None, metadata=_rule("path", "a bundle directory or an .onnx file", optional=True)
    )
    precision: str = field(
        default="auto", metadata=_rule("choice", f"one of {', '.join(PRECISIONS)}", lambda v: v in PRECISIONS)
    )
    threads: int = field(default=0, metadata=_rule("int", "an integer >= 0 (0 = all cores)", lambda v: v >= 0))
    confidence: float = field(default=0.25, metadata=_rule("float", "a number 0 < x <= 1", _fraction))
    iou: float = field(default=0.45, metadata=_rule("float", "a number 0 < x <= 1", _fraction))
    classes: tuple[str, ...] = field(
        default=(), metadata=_rule("labels", "a list of labels, [] = all (a,b,c in the environment)")
    )
    class_confidence: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=_rule(
            "thresholds",
            "a table of label = number 0 < x <= 1 (label=0.5,other=0.3 in the environment)",
            lambda v: all(_fraction(threshold) for threshold in v.values()),
        ),
    )
    max_detections: int = field(default=300, metadata=_rule("int", "an integer >= 1", lambda v: v >= 1))


@dataclass(frozen=True)
class MqttConfig:
    """[mqtt]: the broker connection. Times in seconds. TLS is on when tls_ca or tls_cert is set."""

    host: str = field(default="localhost", metadata=_rule("str", "a host name or address", lambda v: bool(v.strip())))
    port: int = field(default=1883, metadata=_rule("int", "an integer 1..65535", lambda v: 1 <= v <= 65535))
    prefix: str = field(
        default="yolo-edge", metadata=_rule("str", "a topic prefix without #, + or a leading/trailing /", _topic_prefix)
    )
    device_id: str = field(
        default_factory=default_device_id,
        metadata=_rule("str", "letters, digits, _ and - only", lambda v: bool(DEVICE_ID_RE.fullmatch(v))),
    )
    username: str | None = field(default=None, metadata=_rule("str", "a non-empty user name", bool, optional=True))
    password_file: Path | None = field(default=None, metadata=_rule("path", _FILE, optional=True))
    tls_ca: Path | None = field(default=None, metadata=_rule("path", _FILE, optional=True))
    tls_cert: Path | None = field(default=None, metadata=_rule("path", _FILE, optional=True))
    tls_key: Path | None = field(default=None, metadata=_rule("path", _FILE, optional=True))
    tls_insecure: bool = field(default=False, metadata=_rule("bool", _BOOL))
    keepalive: int = field(default=60, metadata=_rule("int", "an integer 5..3600 (seconds)", lambda v: 5 <= v <= 3600))
    detections_qos: int = field(default=0, metadata=_rule("int", "0 or 1", lambda v: v in (0, 1)))
    publish_empty: bool = field(default=False, metadata=_rule("bool", _BOOL))
    reconnect_max_s: float = field(default=60.0, metadata=_rule("float", _SECONDS, _positive))
    # Resolved from password_file or $YOLO_EDGE_MQTT_PASSWORD; repr=False keeps it out of logs and tracebacks.
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None


@dataclass(frozen=True)
class EventsConfig:
    """[events]: end_after = seconds without a label before its `end` event."""

    end_after: float = field(default=5.0, metadata=_rule("float", _SECONDS, _positive))


@dataclass(frozen=True)
class StatsConfig:
    """[stats]: interval = seconds between stats messages."""

    interval: float = field(default=10.0, metadata=_rule("float", _SECONDS, _positive))


@dataclass(frozen=True)
class HomeAssistantConfig:
    """[homeassistant]: MQTT discovery, so the device shows up in Home Assistant without YAML.

    classes: labels that get a count and a presence entity; empty = model.classes, else the
    model's first few labels (never one entity per class of an 80-class model).
    """

    discovery: bool = field(default=True, metadata=_rule("bool", _BOOL))
    discovery_prefix: str = field(
        default="homeassistant",
        metadata=_rule("str", "a topic prefix without #, + or a leading/trailing /", _topic_prefix),
    )
    classes: tuple[str, ...] = field(
        default=(),
        metadata=_rule("labels", "a list of labels, [] = model.classes or the first 5 (a,b in the environment)"),
    )


@dataclass(frozen=True)
class SnapshotConfig:
    """[snapshot]: a JPEG with boxes drawn, on each presence start and on request; width in pixels."""

    enabled: bool = field(default=True, metadata=_rule("bool", _BOOL))
    width: int = field(default=640, metadata=_rule("int", "an integer 32..3840 (pixels)", lambda v: 32 <= v <= 3840))
    quality: int = field(default=80, metadata=_rule("int", "an integer 1..100 (JPEG quality)", lambda v: 1 <= v <= 100))


@dataclass(frozen=True)
class RemoteConfig:
    """[remote]: which commands the agent takes over MQTT. settings: runtime settings on `<prefix>/<device>/set`."""

    settings: bool = field(default=True, metadata=_rule("bool", _BOOL))


@dataclass(frozen=True)
class DeployConfig:
    """[deploy]: new bundles over MQTT on `<prefix>/<device>/deploy`. Sizes in bytes, times in seconds.

    allow_http: plain http:// URLs too (the sha256 in the command still has to match), for a LAN
    server without TLS. timeout_s: connecting or a read that stalls this long fails the download;
    max_duration_s: the whole download. keep_bundles: deployed bundles kept on disk (the running one
    and the one before it are never removed).
    """

    enabled: bool = field(default=True, metadata=_rule("bool", _BOOL))
    allow_http: bool = field(default=False, metadata=_rule("bool", _BOOL))
    max_bytes: int = field(
        default=200_000_000, metadata=_rule("int", "an integer >= 1024 (bytes)", lambda v: v >= 1024)
    )
    timeout_s: float = field(default=30.0, metadata=_rule("float", _SECONDS, _positive))
    max_duration_s: float = field(default=900.0, metadata=_rule("float", _SECONDS, _positive))
    keep_bundles: int = field(default=3, metadata=_rule("int", "an integer >= 2", lambda v: v >= 2))


@dataclass(frozen=True)
class AgentSectionConfig:
    """[agent]: where durable state lives (outbox, bundles), how big the outbox may grow, how much to log."""

    state_dir: Path = field(default_factory=default_state_dir, metadata=_rule("path", "a directory path"))
    outbox_max_messages: int = field(default=10000, metadata=_rule("int", "an integer >= 1", lambda v: v >= 1))
    outbox_max_age_s: float = field(default=604800.0, metadata=_rule("float", _SECONDS, _positive))
    log_level: str = field(
        default="info", metadata=_rule("choice", f"one of {', '.join(LOG_LEVELS)}", lambda v: v in LOG_LEVELS)
    )


@dataclass(frozen=True)
class AgentConfig:
    """The whole configuration, one frozen section per TOML table; `config_file` is where it was read."""

    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    agent: AgentSectionConfig = field(default_factory=AgentSectionConfig)
    config_file: Path | None = None

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain JSON types, secrets replaced: safe to print or log."""
        summary: dict[str, Any] = {"config_file": _plain(self.config_file)}
        for name in SECTIONS:
            section = getattr(self, name)
            # Fields hidden from repr are the secrets; the same marker hides them here.
            summary[name] = {f.name: _plain(getattr(section, f.name)) for f in fields(section) if f.repr}
        summary["mqtt"]["password"] = "<redacted>" if self.mqtt.password else None
        return summary


SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "model": ModelConfig,
    "mqtt": MqttConfig,
    "events": EventsConfig,
    "stats": StatsConfig,
    "homeassistant": HomeAssistantConfig,
    "snapshot": SnapshotConfig,
    "remote": RemoteConfig,
    "deploy": DeployConfig,
    "agent": AgentSectionConfig,
}
_SPECS: dict[tuple[str, str], _Spec] = {
    (section, f.name): f.metadata["spec"] for section, cls in SECTIONS.items() for f in fields(cls) if f.metadata
}


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | Mapping):
        return list(value) if isinstance(value, tuple) else dict(value)
    return value


def _shown(text: object) -> str:
    """`text` as it reads, or its repr when it holds a newline or another character that would split the message."""
    text = str(text)
    return text if text.isprintable() else repr(text)


def _quoted(path: Path) -> str:
    """'path' in quotes, with any newline in it escaped."""
    return repr(str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"config file {_shown(path)} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {_shown(path)}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:  # its message carries the line and column
        raise ConfigError(f"config file {_shown(path)} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {_shown(path)} is not UTF-8 text") from None


def _layers(
    path: Path | None, env: Mapping[str, str], overrides: Mapping[tuple[str, str], object]
) -> Iterator[tuple[str, str, object, str, str]]:
    """Every setting in precedence order: (section, key, raw value, origin, where).

    origin is appended to the key in messages about the value ("" for the file, whose values read as
    written); where is appended to messages about an unknown key.
    """
    for section, table in (_read_toml(path) if path is not None else {}).items():
        if section in SECTIONS and not isinstance(table, dict):
            raise ConfigError(f"{section} in {_shown(path)} must be a table: [{section}] followed by its keys")
        for key, raw in table.items() if section in SECTIONS else [("", table)]:
            yield section, key, raw, "", f" in {_shown(path)}"
    for name in sorted(env):
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("_")
        # Other YOLO_EDGE_* variables (test and benchmark knobs) are not configuration.
        if name.startswith(ENV_PREFIX) and name != PASSWORD_ENV and section in SECTIONS:
            yield section, key, env[name], f" (from {_shown(name)})", f" (from {_shown(name)})"
    for (section, key), raw in overrides.items():
        if raw is not None:  # None means "flag not given", so argparse defaults can pass straight through
            yield section, key, raw, " (from the command line)", " on the command line"


def _is_model(path: Path) -> bool:
    return path.is_dir() or (path.is_file() and path.suffix == ".onnx")


def _is_readable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def _path_problem(path: Path, passes: Callable[[Path], bool]) -> str | None:
    """None when `path` passes; else what is wrong with it, to follow its name in a message."""
    try:
        if passes(path):
            return None
        return "does not exist" if not path.exists() else "is not allowed"
    except OSError as error:  # a name too long for the file system, a directory we may not enter, ...
        return f"cannot be checked ({error.strerror or error})"


def _check_together(
    values: dict[tuple[str, str], tuple[Any, str]], env: Mapping[str, str], require_model: bool
) -> tuple[str | None, list[str]]:
    """Checks of the filesystem and of keys that belong together, on the values that will be used.

    Run once at the end, so a file's placeholder path overridden on the command line is never checked.
    Returns (password, problems).
    """

    def get(section: str, key: str) -> Any:
        return values.get((section, key), (None, ""))[0]

    def name(section: str, key: str) -> str:
        return f"{section}.{key}{values.get((section, key), (None, ''))[1]}"

    problems: list[str] = []
    model_path = get("model", "path")
    if model_path is None and require_model:
        problems.append("model.path is not set; set [model] path (or --model) to a bundle directory or .onnx file")
    elif model_path is not None and (what := _path_problem(model_path, _is_model)):
        problems.append(
            f"{name('model', 'path')}: {_quoted(model_path)} {what}; expected a bundle directory or .onnx file"
        )
    readable = {}
    for key in ("password_file", "tls_ca", "tls_cert", "tls_key"):
        path = get("mqtt", key)
        what = _path_problem(path, _is_readable_file) if path is not None else None
        readable[key] = path is not None and what is None
        if what:
            problems.append(f"{name('mqtt', key)}: {_quoted(path)} {what}; expected {_FILE}")
    if (get("mqtt", "tls_cert") is None) != (get("mqtt", "tls_key") is None):
        problems.append("mqtt.tls_cert and mqtt.tls_key go together; set both or neither")
    if get("mqtt", "tls_insecure") and get("mqtt", "tls_ca") is None and get("mqtt", "tls_cert") is None:
        problems.append(f"{name('mqtt', 'tls_insecure')}: true needs TLS, which is off until mqtt.tls_ca is set")
    for label in get("model", "class_confidence") or {}:
        if get("model", "classes") and label not in get("model", "classes"):
            problems.append(f"model.class_confidence: {label!r} is not in model.classes, which drops it anyway")

    password_file, password = get("mqtt", "password_file"), env.get(PASSWORD_ENV) or None
    if password_file is not None and password is not None:
        problems.append(f"{name('mqtt', 'password_file')} and {PASSWORD_ENV} are both set; use one of them")
    elif readable["password_file"]:
        try:
            # Editors and `echo` end the file with a newline that is not part of the password.
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
            if not password:
                problems.append(f"{name('mqtt', 'password_file')}: {_quoted(password_file)} is empty")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{name('mqtt', 'password_file')}: cannot read {_quoted(password_file)}: {error}")
    if password and get("mqtt", "username") is None:
        problems.append("a broker password is set but mqtt.username is not; set mqtt.username too")
    return password or None, problems


def load_config(
    path: Path | None,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[tuple[str, str], object] | None = None,
    require_model: bool = True,
) -> AgentConfig:
    """Read `path` (None: defaults only), apply `env` then `overrides`, validate everything.

    overrides: {(section, key): value}; a value is typed, or a string parsed like an environment
    value; None is ignored. Raises ConfigError listing every problem found, on one line.
    """
    values: dict[tuple[str, str], tuple[Any, str]] = {}  # key -> (parsed value, origin)
    problems: list[str] = []
    for section, key, raw, origin, where in _layers(path, env, overrides or {}):
        if (section, key) == ("mqtt", "password"):
            problems.append(
                f"mqtt.password is not allowed{where}; put the password in a file only the agent can read "
                f"and set mqtt.password_file to it, or set {PASSWORD_ENV}"
            )
        elif section not in SECTIONS:
            problems.append(f"unknown section [{_shown(section)}]{where}; allowed sections: {', '.join(SECTIONS)}")
        elif (spec := _SPECS.get((section, key))) is None:
            allowed = ", ".join(k for s, k in _SPECS if s == section)
            problems.append(f"unknown key {section}.{_shown(key)}{where}; allowed keys in [{section}]: {allowed}")
        else:
            try:
                values[section, key] = (spec.parse(raw, text=bool(origin)), origin)
            except (TypeError, ValueError, KeyError):
                problems.append(f"{section}.{key}{origin}: {raw!r} is not allowed; expected {spec.expected}")
    password, more = _check_together(values, env, require_model) if not problems else (None, [])
    if problems or more:
        raise ConfigError(problems + more)
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for (section, key), (value, _) in values.items():
        if value is not None:  # None from an empty env value means "back to the default"
            sections[section][key] = value
    sections["agent"].setdefault("state_dir", default_state_dir(env))
    built = {name: cls(**sections[name]) for name, cls in SECTIONS.items()}
    built["mqtt"] = MqttConfig(**sections["mqtt"], password=password)
    return AgentConfig(**built, config_file=Path(path) if path is not None else None)
