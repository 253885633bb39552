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

import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from agent.config.keys import FILE, BadEntry, ConfigError, Spec, shown_value
from agent.config.lines import parse_lines
from agent.config.sections import SECTIONS, AgentConfig, MqttConfig, default_state_dir
from agent.config.zones import parse_zones

ENV_PREFIX = "YOLO_EDGE_"
_COMMAND_LINE = " (from the command line)"
PASSWORD_ENV = "YOLO_EDGE_MQTT_PASSWORD"

_SPECS: dict[tuple[str, str], Spec] = {
    (section, f.name): f.metadata["spec"] for section, cls in SECTIONS.items() for f in fields(cls) if f.metadata
}


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
    except ValueError:  # tomllib leaves Python's own limit on integer digits (4300) to raise
        raise ConfigError(
            f"config file {_shown(path)} is not valid TOML: an integer has more digits than Python reads"
        ) from None


def _layers(
    document: Mapping[str, Any], path: Path | None, env: Mapping[str, str], overrides: Mapping[tuple[str, str], object]
) -> Iterator[tuple[str, str, object, str, str]]:
    """Every setting in precedence order: (section, key, raw value, origin, where).

    origin is appended to the key in messages about the value ("" for the file, whose values read as
    written); where is appended to messages about an unknown key.
    """
    for section, table in document.items():
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
            yield section, key, raw, _COMMAND_LINE, " on the command line"


def _replace_broker_address(
    values: dict[tuple[str, str], tuple[Any, str]], section: str, key: str, origin: str
) -> None:
    """mqtt.host and mqtt.hosts both say where the broker is: one set in a higher layer (`--mqtt-host` over a
    file's hosts) replaces the other; both in the same layer is an error (_check_together)."""
    other = {"host": "hosts", "hosts": "host"}.get(key) if section == "mqtt" else None
    if other is None or not values[section, key][0] or (section, other) not in values:
        return
    if _layer(values[section, other][1]) < _layer(origin):
        del values[section, other]


def _layer(origin: str) -> int:
    """0 for the file, 1 for the environment, 2 for the command line (origin as _layers gives it)."""
    return 0 if not origin else 2 if origin == _COMMAND_LINE else 1


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
            problems.append(f"{name('mqtt', key)}: {_quoted(path)} {what}; expected {FILE}")
    if get("mqtt", "host") is not None and get("mqtt", "hosts"):
        problems.append(
            f"{name('mqtt', 'host')} and {name('mqtt', 'hosts')} are both set; set hosts alone (or host and port)"
        )
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
    document = dict(_read_toml(path)) if path is not None else {}
    # [zones.NAME] are tables of tables, and come from the file alone (they are part of the installation).
    zones, zone_problems = (
        parse_zones(document.pop("zones"), f" in {_shown(path)}") if "zones" in document else ((), [])
    )
    problems.extend(zone_problems)
    lines, line_problems = parse_lines(document.pop("lines", {}), f" in {_shown(path)}")
    problems.extend(line_problems)
    for section, key, raw, origin, where in _layers(document, path, env, overrides or {}):
        if (section, key) == ("mqtt", "password"):
            problems.append(
                f"mqtt.password is not allowed{where}; put the password in a file only the agent can read "
                f"and set mqtt.password_file to it, or set {PASSWORD_ENV}"
            )
        elif section not in SECTIONS:
            allowed = ", ".join([*SECTIONS, "zones.NAME", "lines.NAME"])
            problems.append(f"unknown section [{_shown(section)}]{where}; allowed sections: {allowed}")
        elif (spec := _SPECS.get((section, key))) is None:
            allowed = ", ".join(k for s, k in _SPECS if s == section)
            problems.append(f"unknown key {section}.{_shown(key)}{where}; allowed keys in [{section}]: {allowed}")
        else:
            try:
                values[section, key] = (spec.parse(raw, text=bool(origin)), origin)
            except BadEntry as bad:
                problems.append(
                    f"{section}.{key}{origin}: entry {shown_value(bad.entry)} is not allowed; expected {spec.expected}"
                )
            except (TypeError, ValueError, KeyError):
                problems.append(f"{section}.{key}{origin}: {shown_value(raw)} is not allowed; expected {spec.expected}")
            else:
                _replace_broker_address(values, section, key, origin)
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
    return AgentConfig(**built, zones=zones, lines=lines, config_file=Path(path) if path is not None else None)
