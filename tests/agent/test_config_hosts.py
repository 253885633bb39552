"""[mqtt] hosts and protocol: a broker's nodes and the MQTT version, from the file, the environment or flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, MqttConfig, load_config

HOSTS_EXPECTED = 'expected a list of "host:port" ("host" alone takes mqtt.port'


def mqtt(tmp_path: Path, text: str = "", env: dict[str, str] | None = None, **overrides: object) -> MqttConfig:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    flags = {("mqtt", key): value for key, value in overrides.items()}
    return load_config(path, env=env or {}, overrides=flags, require_model=False).mqtt


def rejected(tmp_path: Path, text: str = "", env: dict[str, str] | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        mqtt(tmp_path, text, env, **overrides)
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "env", "nodes"),
    [
        ("", {}, (("localhost", 1883),)),
        ('[mqtt]\nhost = "broker"\nport = 8883', {}, (("broker", 8883),)),
        ('[mqtt]\nhosts = ["a:1884", "b", "[::1]:1885"]\nport = 1999', {}, (("a", 1884), ("b", 1999), ("::1", 1885))),
        ("", {"YOLO_EDGE_MQTT_HOSTS": " a:1884 , b:1885 "}, (("a", 1884), ("b", 1885))),
        # One address in a higher layer replaces the other form in a lower one.
        ('[mqtt]\nhosts = ["a:1884", "b:1885"]', {"YOLO_EDGE_MQTT_HOST": "c"}, (("c", 1883),)),
        ('[mqtt]\nhost = "c"', {"YOLO_EDGE_MQTT_HOSTS": "a:1884,b:1885"}, (("a", 1884), ("b", 1885))),
        # An empty variable sets the default back, as for every key: host and port.
        ('[mqtt]\nhosts = ["a:1884"]', {"YOLO_EDGE_MQTT_HOSTS": ""}, (("localhost", 1883),)),
    ],
)
def test_the_nodes_come_from_hosts_or_else_host_and_port(tmp_path: Path, text: str, env: dict, nodes: tuple) -> None:
    assert mqtt(tmp_path, text, env).nodes == nodes


def test_the_command_line_replaces_the_file_s_hosts_and_the_other_way_round(tmp_path: Path) -> None:
    assert mqtt(tmp_path, '[mqtt]\nhosts = ["a:1884"]', host="cli").nodes == (("cli", 1883),)
    assert mqtt(tmp_path, '[mqtt]\nhost = "file"', hosts="a:1884,b").nodes == (("a", 1884), ("b", 1883))


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[mqtt]\nhosts = ["a:1883", "b:x"]', {}, f"mqtt.hosts: entry 'b:x' is not allowed; {HOSTS_EXPECTED}"),
        ('[mqtt]\nhosts = ["a:70000"]', {}, "mqtt.hosts: entry 'a:70000' is not allowed"),
        ('[mqtt]\nhosts = ["a b:1883"]', {}, "mqtt.hosts: entry 'a b:1883' is not allowed"),
        ('[mqtt]\nhosts = ["::1"]', {}, "mqtt.hosts: entry '::1' is not allowed"),
        ('[mqtt]\nhosts = ["a:1883", 3]', {}, f"mqtt.hosts: ['a:1883', 3] is not allowed; {HOSTS_EXPECTED}"),
        ('[mqtt]\nhosts = "a:1883"', {}, "mqtt.hosts: 'a:1883' is not allowed; expected a list"),
        (
            "",
            {"YOLO_EDGE_MQTT_HOSTS": "a:1883,,b:"},
            "mqtt.hosts (from YOLO_EDGE_MQTT_HOSTS): entry 'b:' is not allowed",
        ),
        ('[mqtt]\nhost = "a"\nhosts = ["b:1883"]', {}, "mqtt.host and mqtt.hosts are both set; set hosts alone"),
        (
            "",
            {"YOLO_EDGE_MQTT_HOST": "a", "YOLO_EDGE_MQTT_HOSTS": "b"},
            "mqtt.host (from YOLO_EDGE_MQTT_HOST) and mqtt.hosts (from YOLO_EDGE_MQTT_HOSTS) are both set",
        ),
        ('[mqtt]\nprotocol = "4"', {}, "mqtt.protocol: '4' is not allowed; expected one of 'auto', '5', '3.1.1'"),
        ("[mqtt]\nprotocol = 5", {}, "mqtt.protocol: 5 is not allowed; expected one of 'auto', '5', '3.1.1'"),
        ("", {"YOLO_EDGE_MQTT_PROTOCOL": "mqtt5"}, "mqtt.protocol (from YOLO_EDGE_MQTT_PROTOCOL): 'mqtt5'"),
    ],
)
def test_a_bad_address_or_version_is_one_line_naming_the_key(
    tmp_path: Path, text: str, env: dict, message: str
) -> None:
    assert message in rejected(tmp_path, text, env)


@pytest.mark.parametrize(("text", "env", "protocol"), [("", {}, "auto"), ('[mqtt]\nprotocol = "3.1.1"', {}, "3.1.1")])
def test_the_protocol_is_auto_unless_set(tmp_path: Path, text: str, env: dict, protocol: str) -> None:
    assert mqtt(tmp_path, text, env).protocol == protocol
    assert mqtt(tmp_path, env={"YOLO_EDGE_MQTT_PROTOCOL": "5"}).protocol == "5"
