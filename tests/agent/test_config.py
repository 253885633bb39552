import dataclasses
import re
import socket
import tomllib
from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, default_device_id, load_config
from agent.config.lines import LINE_KEYS
from agent.config.sections import SECTIONS
from agent.config.zones import ZONE_KEYS
from tests.agent.agent_process import agent_env, run_agent

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "systemd" / "agent.example.toml"

DEFAULTS = [
    ("source", "uri", "0"),
    ("source", "loop", False),
    ("source", "fps", 0.0),
    ("source", "max_frame_age", 1.0),
    ("source", "reconnect_max_s", 10.0),
    ("model", "path", None),
    ("model", "precision", "auto"),
    ("model", "threads", 0),
    ("model", "confidence", 0.25),
    ("model", "iou", 0.45),
    ("model", "classes", ()),
    ("model", "class_confidence", {}),
    ("model", "max_detections", 300),
    ("mqtt", "host", "localhost"),
    ("mqtt", "port", 1883),
    ("mqtt", "prefix", "yolo-edge"),
    ("mqtt", "username", None),
    ("mqtt", "password_file", None),
    ("mqtt", "password", None),
    ("mqtt", "tls_ca", None),
    ("mqtt", "tls_cert", None),
    ("mqtt", "tls_key", None),
    ("mqtt", "tls_insecure", False),
    ("mqtt", "keepalive", 60),
    ("mqtt", "detections_qos", 0),
    ("mqtt", "publish_empty", False),
    ("mqtt", "reconnect_max_s", 60.0),
    ("events", "end_after", 5.0),
    ("stats", "interval", 10.0),
    ("homeassistant", "discovery", True),
    ("homeassistant", "discovery_prefix", "homeassistant"),
    ("homeassistant", "classes", ()),
    ("snapshot", "enabled", True),
    ("snapshot", "width", 640),
    ("snapshot", "quality", 80),
    ("remote", "settings", True),
    ("deploy", "enabled", True),
    ("deploy", "allow_http", False),
    ("deploy", "max_bytes", 200_000_000),
    ("deploy", "timeout_s", 30.0),
    ("deploy", "max_duration_s", 900.0),
    ("deploy", "keep_bundles", 3),
    ("agent", "outbox_max_messages", 10000),
    ("agent", "outbox_max_age_s", 604800.0),
    ("agent", "log_level", "info"),
]


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str = "", env: dict[str, str] | None = None, **kwargs) -> AgentConfig:
    kwargs.setdefault("require_model", False)
    return load_config(write(tmp_path, text), env=env or {}, **kwargs)


def rejects(tmp_path: Path, text: str = "", env: dict[str, str] | None = None, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def get(config: AgentConfig, section: str, key: str) -> object:
    return getattr(getattr(config, section), key)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Real files for keys that must exist: a bundle directory, an .onnx file, TLS files, a password file."""
    made = {"bundle": tmp_path / "bundle", "onnx": tmp_path / "model.onnx", "txt": tmp_path / "notes.txt"}
    made["bundle"].mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        made[name] = write(tmp_path, "-----BEGIN-----\n", name)
    made["onnx"].write_bytes(b"onnx")
    made["txt"].write_text("not a model")
    made["password"] = write(tmp_path, "s3cret-from-file\n", "mqtt-password")
    made["empty"] = write(tmp_path, "\n", "empty-password")
    return made


@pytest.mark.parametrize(("section", "key", "expected"), DEFAULTS)
def test_defaults(section, key, expected):
    config = load_config(None, env={}, require_model=False)
    assert get(config, section, key) == expected


def test_dynamic_defaults_come_from_host_and_env():
    config = load_config(None, env={"HOME": "/home/pi"}, require_model=False)
    assert config.mqtt.device_id == default_device_id(socket.gethostname())
    assert re.fullmatch(r"[A-Za-z0-9_-]+", config.mqtt.device_id)
    assert config.agent.state_dir == Path("/home/pi/.local/state/yolo-edge")
    assert config.config_file is None


FILE_VALUES = """
[source]
uri = "rtsp://cam.lan/stream"
loop = true
fps = 5
max_frame_age = 0.5
reconnect_max_s = 3
[model]
precision = "INT8"
threads = 2
confidence = 0.4
iou = 0.6
classes = ["person", "car"]
class_confidence = { person = 0.6 }
max_detections = 50
[mqtt]
host = "broker.lan"
port = 8883
prefix = "home/cams"
device_id = "garage_1"
tls_insecure = false
keepalive = 30
detections_qos = 1
publish_empty = true
reconnect_max_s = 120
[events]
end_after = 2.5
[stats]
interval = 30
[agent]
state_dir = "/srv/yolo"
outbox_max_messages = 500
outbox_max_age_s = 3600
log_level = "debug"
"""


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("source", "uri", "rtsp://cam.lan/stream"),
        ("source", "loop", True),
        ("source", "fps", 5.0),
        ("source", "max_frame_age", 0.5),
        ("source", "reconnect_max_s", 3.0),
        ("model", "precision", "int8"),  # choices are matched without case
        ("model", "threads", 2),
        ("model", "confidence", 0.4),
        ("model", "iou", 0.6),
        ("model", "classes", ("person", "car")),
        ("model", "class_confidence", {"person": 0.6}),
        ("model", "max_detections", 50),
        ("mqtt", "host", "broker.lan"),
        ("mqtt", "port", 8883),
        ("mqtt", "prefix", "home/cams"),
        ("mqtt", "device_id", "garage_1"),
        ("mqtt", "keepalive", 30),
        ("mqtt", "detections_qos", 1),
        ("mqtt", "publish_empty", True),
        ("mqtt", "reconnect_max_s", 120.0),
        ("events", "end_after", 2.5),
        ("stats", "interval", 30.0),
        ("agent", "state_dir", Path("/srv/yolo")),
        ("agent", "outbox_max_messages", 500),
        ("agent", "outbox_max_age_s", 3600.0),
        ("agent", "log_level", "debug"),
    ],
)
def test_file_values(tmp_path, section, key, expected):
    value = get(load(tmp_path, FILE_VALUES), section, key)
    assert value == expected
    if isinstance(expected, float):
        assert type(value) is float  # an int written for a float key still reads as a float


def test_file_values_with_paths(tmp_path, files):
    text = f"""
[model]
path = "{files["bundle"]}"
[mqtt]
username = "agent"
password_file = "{files["password"]}"
tls_ca = "{files["ca.crt"]}"
tls_cert = "{files["client.crt"]}"
tls_key = "{files["client.key"]}"
tls_insecure = true
"""
    config = load(tmp_path, text, require_model=True)
    assert config.model.path == files["bundle"]
    assert (config.mqtt.tls_ca, config.mqtt.tls_cert, config.mqtt.tls_key) == (
        files["ca.crt"],
        files["client.crt"],
        files["client.key"],
    )
    assert config.mqtt.tls and config.mqtt.tls_insecure
    assert config.mqtt.password == "s3cret-from-file"  # the file's final newline is not part of it
    assert config.config_file == tmp_path / "agent.toml"


def test_uri_may_be_written_as_a_camera_index(tmp_path):
    assert load(tmp_path, "[source]\nuri = 1").source.uri == "1"


@pytest.mark.parametrize(
    ("variable", "text", "section", "key", "expected"),
    [
        ("YOLO_EDGE_MQTT_HOST", "broker.lan", "mqtt", "host", "broker.lan"),
        ("YOLO_EDGE_MQTT_HOST", " broker.lan\n", "mqtt", "host", "broker.lan"),
        ("YOLO_EDGE_MQTT_PORT", " 8883 ", "mqtt", "port", 8883),
        ("YOLO_EDGE_SOURCE_MAX_FRAME_AGE", "0.5", "source", "max_frame_age", 0.5),
        ("YOLO_EDGE_SOURCE_FPS", "12", "source", "fps", 12.0),
        ("YOLO_EDGE_SOURCE_URI", "rtsp://cam/stream", "source", "uri", "rtsp://cam/stream"),
        ("YOLO_EDGE_SOURCE_LOOP", "true", "source", "loop", True),
        ("YOLO_EDGE_SOURCE_LOOP", "1", "source", "loop", True),
        ("YOLO_EDGE_SOURCE_LOOP", "YES", "source", "loop", True),
        ("YOLO_EDGE_MQTT_PUBLISH_EMPTY", "false", "mqtt", "publish_empty", False),
        ("YOLO_EDGE_MQTT_PUBLISH_EMPTY", "0", "mqtt", "publish_empty", False),
        ("YOLO_EDGE_MQTT_PUBLISH_EMPTY", "no", "mqtt", "publish_empty", False),
        ("YOLO_EDGE_MODEL_CLASSES", "person, car", "model", "classes", ("person", "car")),
        ("YOLO_EDGE_MODEL_CLASSES", "", "model", "classes", ()),
        (
            "YOLO_EDGE_MODEL_CLASS_CONFIDENCE",
            "person=0.5, car=0.3",
            "model",
            "class_confidence",
            {"person": 0.5, "car": 0.3},
        ),
        ("YOLO_EDGE_MODEL_PRECISION", "fp32", "model", "precision", "fp32"),
        ("YOLO_EDGE_AGENT_LOG_LEVEL", "DEBUG", "agent", "log_level", "debug"),
        ("YOLO_EDGE_AGENT_STATE_DIR", "/srv/state", "agent", "state_dir", Path("/srv/state")),
        ("YOLO_EDGE_AGENT_OUTBOX_MAX_MESSAGES", "42", "agent", "outbox_max_messages", 42),
        ("YOLO_EDGE_MQTT_DEVICE_ID", "cam-2", "mqtt", "device_id", "cam-2"),
        ("YOLO_EDGE_HOMEASSISTANT_DISCOVERY", "off", "homeassistant", "discovery", False),
        ("YOLO_EDGE_HOMEASSISTANT_DISCOVERY_PREFIX", "hass", "homeassistant", "discovery_prefix", "hass"),
        ("YOLO_EDGE_HOMEASSISTANT_CLASSES", "person,car", "homeassistant", "classes", ("person", "car")),
        ("YOLO_EDGE_SNAPSHOT_ENABLED", "false", "snapshot", "enabled", False),
        ("YOLO_EDGE_SNAPSHOT_WIDTH", "320", "snapshot", "width", 320),
        ("YOLO_EDGE_SNAPSHOT_QUALITY", "95", "snapshot", "quality", 95),
        ("YOLO_EDGE_REMOTE_SETTINGS", "0", "remote", "settings", False),
        ("YOLO_EDGE_DEPLOY_ENABLED", "no", "deploy", "enabled", False),
        ("YOLO_EDGE_DEPLOY_ALLOW_HTTP", "true", "deploy", "allow_http", True),
        ("YOLO_EDGE_DEPLOY_MAX_BYTES", "5000000", "deploy", "max_bytes", 5_000_000),
        ("YOLO_EDGE_DEPLOY_TIMEOUT_S", "2.5", "deploy", "timeout_s", 2.5),
        ("YOLO_EDGE_DEPLOY_MAX_DURATION_S", "60", "deploy", "max_duration_s", 60.0),
        ("YOLO_EDGE_DEPLOY_KEEP_BUNDLES", "5", "deploy", "keep_bundles", 5),
    ],
)
def test_env_overrides(tmp_path, variable, text, section, key, expected):
    assert get(load(tmp_path, env={variable: text}), section, key) == expected


@pytest.mark.parametrize(
    ("variable", "text", "fragment"),
    [
        (
            "YOLO_EDGE_MQTT_PORT",
            "abc",
            "mqtt.port (from YOLO_EDGE_MQTT_PORT): 'abc' is not allowed; expected an integer 1..65535",
        ),
        ("YOLO_EDGE_MQTT_PORT", "70000", "mqtt.port (from YOLO_EDGE_MQTT_PORT): '70000' is not allowed"),
        ("YOLO_EDGE_MODEL_THREADS", "1.5", "model.threads (from YOLO_EDGE_MODEL_THREADS): '1.5' is not allowed"),
        (
            "YOLO_EDGE_SOURCE_LOOP",
            "maybe",
            "source.loop (from YOLO_EDGE_SOURCE_LOOP): 'maybe' is not allowed; expected true or false",
        ),
        ("YOLO_EDGE_SOURCE_FPS", "fast", "source.fps (from YOLO_EDGE_SOURCE_FPS): 'fast' is not allowed"),
        ("YOLO_EDGE_SOURCE_MAX_FRAME_AGE", "0", "source.max_frame_age (from YOLO_EDGE_SOURCE_MAX_FRAME_AGE): '0'"),
        ("YOLO_EDGE_SOURCE_MAX_FRAME_AGE", "inf", "source.max_frame_age (from YOLO_EDGE_SOURCE_MAX_FRAME_AGE): 'inf'"),
        (
            "YOLO_EDGE_MODEL_CLASS_CONFIDENCE",
            "person",
            "model.class_confidence (from YOLO_EDGE_MODEL_CLASS_CONFIDENCE)",
        ),
        (
            "YOLO_EDGE_MODEL_CLASS_CONFIDENCE",
            "person=2",
            "model.class_confidence (from YOLO_EDGE_MODEL_CLASS_CONFIDENCE)",
        ),
        ("YOLO_EDGE_AGENT_LOG_LEVEL", "loud", "agent.log_level (from YOLO_EDGE_AGENT_LOG_LEVEL): 'loud'"),
        ("YOLO_EDGE_MQTT_PREFIX", "a/#", "mqtt.prefix (from YOLO_EDGE_MQTT_PREFIX): 'a/#' is not allowed"),
        (
            "YOLO_EDGE_MQTT_HOTS",
            "x",
            "unknown key mqtt.hots (from YOLO_EDGE_MQTT_HOTS); allowed keys in [mqtt]: host, port",
        ),
        (
            "YOLO_EDGE_MQTT_PASSWORD_FILE",
            "/nonexistent/pw",
            "mqtt.password_file (from YOLO_EDGE_MQTT_PASSWORD_FILE): '/nonexistent/pw' does not exist",
        ),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path, variable, text, fragment):
    assert fragment in rejects(tmp_path, env={variable: text})


def test_env_that_is_not_configuration_is_ignored(tmp_path):
    config = load(tmp_path, env={"YOLO_EDGE_BENCH_ROUNDS": "x", "PATH": "/bin", "MQTT_PORT": "1"})
    assert config == load(tmp_path, env={})


def test_empty_env_value_resets_an_optional_key(tmp_path):
    assert load(tmp_path, '[mqtt]\nusername = "agent"').mqtt.username == "agent"
    assert load(tmp_path, '[mqtt]\nusername = "agent"', env={"YOLO_EDGE_MQTT_USERNAME": ""}).mqtt.username is None


@pytest.mark.parametrize(
    ("env", "overrides", "expected_port"),
    [
        ({}, {}, 1000),  # the file beats the default
        ({"YOLO_EDGE_MQTT_PORT": "2000"}, {}, 2000),  # env beats the file
        ({"YOLO_EDGE_MQTT_PORT": "2000"}, {("mqtt", "port"): 3000}, 3000),  # command line beats env, typed
        ({"YOLO_EDGE_MQTT_PORT": "2000"}, {("mqtt", "port"): "3000"}, 3000),  # or as a string to parse
        ({"YOLO_EDGE_MQTT_PORT": "2000"}, {("mqtt", "port"): None}, 2000),  # None = flag not given
    ],
)
def test_precedence(tmp_path, env, overrides, expected_port):
    assert load(tmp_path, "[mqtt]\nport = 1000", env=env, overrides=overrides).mqtt.port == expected_port


@pytest.mark.parametrize(
    ("overrides", "section", "key", "expected"),
    [
        ({("source", "loop"): True}, "source", "loop", True),
        ({("source", "loop"): "yes"}, "source", "loop", True),
        ({("source", "uri"): 2}, "source", "uri", "2"),
        ({("model", "classes"): ["dog"]}, "model", "classes", ("dog",)),
        ({("model", "classes"): "dog,cat"}, "model", "classes", ("dog", "cat")),
        ({("model", "precision"): "int8"}, "model", "precision", "int8"),
        ({("mqtt", "device_id"): "pi-7"}, "mqtt", "device_id", "pi-7"),
    ],
)
def test_command_line_overrides(tmp_path, overrides, section, key, expected):
    assert get(load(tmp_path, overrides=overrides), section, key) == expected


def test_command_line_path_beats_env(tmp_path, files):
    env = {"YOLO_EDGE_MODEL_PATH": "/nonexistent"}
    config = load(tmp_path, env=env, overrides={("model", "path"): files["onnx"]}, require_model=True)
    assert config.model.path == files["onnx"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({("mqtt", "port"): "abc"}, "mqtt.port (from the command line): 'abc' is not allowed; expected an integer"),
        ({("mqtt", "port"): 0}, "mqtt.port (from the command line): 0 is not allowed"),
        ({("mqtt", "hots"): "x"}, "unknown key mqtt.hots on the command line; allowed keys in [mqtt]"),
        ({("camera", "uri"): "0"}, "unknown section [camera] on the command line; allowed sections: source, model"),
        ({("mqtt", "password"): "hunter2"}, "mqtt.password is not allowed on the command line"),
    ],
)
def test_bad_command_line_overrides(tmp_path, overrides, fragment):
    message = rejects(tmp_path, overrides=overrides)
    assert fragment in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[source]\nuri = ""', "source.uri: '' is not allowed; expected a camera index"),
        ("[source]\nuri = true", "source.uri: True is not allowed"),
        ('[source]\nloop = "yes"', "source.loop: 'yes' is not allowed; expected true or false"),
        ("[source]\nfps = -1", "source.fps: -1 is not allowed; expected a number >= 0"),
        ("[source]\nmax_frame_age = 0", "source.max_frame_age: 0 is not allowed; expected a number > 0"),
        ("[source]\nmax_frame_age = nan", "source.max_frame_age: nan is not allowed"),
        ("[source]\nreconnect_max_s = -1.0", "source.reconnect_max_s: -1.0 is not allowed; expected a number > 0"),
        ('[model]\nprecision = "fp16"', "model.precision: 'fp16' is not allowed; expected one of auto, int8, fp32"),
        ("[model]\nthreads = -1", "model.threads: -1 is not allowed; expected an integer 0..1024"),
        ("[model]\nthreads = 1.5", "model.threads: 1.5 is not allowed; expected an integer"),
        ("[model]\nconfidence = 0", "model.confidence: 0 is not allowed; expected a number 0 < x <= 1"),
        ("[model]\nconfidence = 1.5", "model.confidence: 1.5 is not allowed"),
        ("[model]\niou = 0.0", "model.iou: 0.0 is not allowed; expected a number 0 < x <= 1"),
        ('[model]\nclasses = "person"', "model.classes: 'person' is not allowed; expected a list of labels"),
        ('[model]\nclasses = ["person", 3]', "model.classes: ['person', 3] is not allowed"),
        ('[model]\nclasses = [""]', "model.classes: [''] is not allowed"),
        ("[model]\nclass_confidence = { person = 1.5 }", "model.class_confidence: {'person': 1.5} is not allowed"),
        ("[model]\nclass_confidence = 0.5", "model.class_confidence: 0.5 is not allowed; expected a table"),
        ("[model]\nmax_detections = 0", "model.max_detections: 0 is not allowed; expected an integer >= 1"),
        ('[mqtt]\nhost = ""', "mqtt.host: '' is not allowed; expected a host name"),
        ("[mqtt]\nport = 70000", "mqtt.port: 70000 is not allowed; expected an integer 1..65535"),
        ("[mqtt]\nport = 0", "mqtt.port: 0 is not allowed; expected an integer 1..65535"),
        ('[mqtt]\nport = "1883"', "mqtt.port: '1883' is not allowed"),
        ("[mqtt]\nport = true", "mqtt.port: True is not allowed"),
        ('[mqtt]\nprefix = ""', "mqtt.prefix: '' is not allowed; expected a topic prefix"),
        ('[mqtt]\nprefix = "home/#"', "mqtt.prefix: 'home/#' is not allowed"),
        ('[mqtt]\nprefix = "a+b"', "mqtt.prefix: 'a+b' is not allowed"),
        ('[mqtt]\nprefix = "/home"', "mqtt.prefix: '/home' is not allowed"),
        ('[mqtt]\nprefix = "home/"', "mqtt.prefix: 'home/' is not allowed"),
        ('[mqtt]\ndevice_id = "my pi"', "mqtt.device_id: 'my pi' is not allowed; expected letters, digits, _ and -"),
        ('[mqtt]\ndevice_id = "a/b"', "mqtt.device_id: 'a/b' is not allowed"),
        ('[mqtt]\nusername = ""', "mqtt.username: '' is not allowed; expected a non-empty user name"),
        ('[mqtt]\ntls_insecure = "no"', "mqtt.tls_insecure: 'no' is not allowed; expected true or false"),
        ("[mqtt]\nkeepalive = 4", "mqtt.keepalive: 4 is not allowed; expected an integer 5..3600"),
        ("[mqtt]\nkeepalive = 3601", "mqtt.keepalive: 3601 is not allowed"),
        ("[mqtt]\ndetections_qos = 2", "mqtt.detections_qos: 2 is not allowed; expected 0 or 1"),
        ("[mqtt]\npublish_empty = 1", "mqtt.publish_empty: 1 is not allowed; expected true or false"),
        ("[mqtt]\nreconnect_max_s = 0", "mqtt.reconnect_max_s: 0 is not allowed; expected a number > 0"),
        ("[events]\nend_after = 0", "events.end_after: 0 is not allowed; expected a number > 0"),
        ("[stats]\ninterval = -5", "stats.interval: -5 is not allowed; expected a number > 0"),
        ('[agent]\nstate_dir = ""', "agent.state_dir: '' is not allowed; expected a directory path"),
        ("[agent]\noutbox_max_messages = 0", "agent.outbox_max_messages: 0 is not allowed; expected an integer >= 1"),
        ("[agent]\noutbox_max_age_s = 0", "agent.outbox_max_age_s: 0 is not allowed; expected a number > 0"),
        ('[agent]\nlog_level = "verbose"', "agent.log_level: 'verbose' is not allowed; expected one of debug, info"),
        ('[homeassistant]\ndiscovery = "yes"', "homeassistant.discovery: 'yes' is not allowed; expected true or false"),
        ('[homeassistant]\ndiscovery_prefix = "ha/#"', "homeassistant.discovery_prefix: 'ha/#' is not allowed"),
        ('[homeassistant]\ndiscovery_prefix = ""', "homeassistant.discovery_prefix: '' is not allowed"),
        ('[homeassistant]\nclasses = "person"', "homeassistant.classes: 'person' is not allowed; expected a list"),
        ("[model]\nthreads = 1025", "model.threads: 1025 is not allowed; expected an integer 0..1024"),
        ("[snapshot]\nwidth = 16", "snapshot.width: 16 is not allowed; expected an integer 32..3840"),
        ("[snapshot]\nwidth = 640.5", "snapshot.width: 640.5 is not allowed"),
        ("[snapshot]\nquality = 0", "snapshot.quality: 0 is not allowed; expected an integer 1..100"),
        ("[snapshot]\nquality = 101", "snapshot.quality: 101 is not allowed"),
        ("[snapshot]\nenabled = 1", "snapshot.enabled: 1 is not allowed; expected true or false"),
        ('[remote]\nsettings = "on"', "remote.settings: 'on' is not allowed; expected true or false"),
        ('[deploy]\nenabled = "yes"', "deploy.enabled: 'yes' is not allowed; expected true or false"),
        ("[deploy]\nallow_http = 1", "deploy.allow_http: 1 is not allowed; expected true or false"),
        ("[deploy]\nmax_bytes = 100", "deploy.max_bytes: 100 is not allowed; expected an integer >= 1024 (bytes)"),
        ("[deploy]\nmax_bytes = 1e9", "deploy.max_bytes: 1000000000.0 is not allowed"),
        ("[deploy]\ntimeout_s = 0", "deploy.timeout_s: 0 is not allowed; expected a number > 0"),
        ("[deploy]\nmax_duration_s = -1", "deploy.max_duration_s: -1 is not allowed; expected a number > 0"),
        ("[deploy]\nkeep_bundles = 1", "deploy.keep_bundles: 1 is not allowed; expected an integer >= 2"),
    ],
)
def test_invalid_values(tmp_path, text, fragment):
    assert fragment in rejects(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "section", "key", "expected"),
    [
        ("[mqtt]\nport = 1", "mqtt", "port", 1),
        ("[mqtt]\nport = 65535", "mqtt", "port", 65535),
        ("[mqtt]\nkeepalive = 5", "mqtt", "keepalive", 5),
        ("[mqtt]\nkeepalive = 3600", "mqtt", "keepalive", 3600),
        ("[mqtt]\ndetections_qos = 1", "mqtt", "detections_qos", 1),
        ('[mqtt]\nprefix = "a/b"', "mqtt", "prefix", "a/b"),
        ("[model]\nconfidence = 1.0", "model", "confidence", 1.0),
        ("[model]\niou = 1", "model", "iou", 1.0),
        ("[model]\nmax_detections = 1", "model", "max_detections", 1),
        ("[source]\nfps = 0", "source", "fps", 0.0),
        ("[agent]\noutbox_max_messages = 1", "agent", "outbox_max_messages", 1),
        ("[snapshot]\nwidth = 32", "snapshot", "width", 32),
        ("[snapshot]\nwidth = 3840", "snapshot", "width", 3840),
        ("[snapshot]\nquality = 1", "snapshot", "quality", 1),
        ("[snapshot]\nquality = 100", "snapshot", "quality", 100),
        ('[homeassistant]\ndiscovery_prefix = "home/ha"', "homeassistant", "discovery_prefix", "home/ha"),
    ],
)
def test_boundaries_are_allowed(tmp_path, text, section, key, expected):
    assert get(load(tmp_path, text), section, key) == expected


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ("", {}, "model.path is not set"),
        ('[model]\npath = "{tmp}/missing"', {}, "model.path: '{tmp}/missing' does not exist; expected a bundle"),
        ('[model]\npath = "{tmp}/notes.txt"', {}, "model.path: '{tmp}/notes.txt' is not allowed; expected a bundle"),
        ('[mqtt]\ntls_ca = "{tmp}/missing.crt"', {}, "mqtt.tls_ca: '{tmp}/missing.crt' does not exist; expected an"),
        ('[mqtt]\ntls_ca = "{tmp}"', {}, "mqtt.tls_ca: '{tmp}' is not allowed; expected an existing, readable file"),
        ('[mqtt]\ntls_cert = "{tmp}/client.crt"', {}, "mqtt.tls_cert and mqtt.tls_key go together"),
        ('[mqtt]\ntls_key = "{tmp}/client.key"', {}, "mqtt.tls_cert and mqtt.tls_key go together"),
        ("[mqtt]\ntls_insecure = true", {}, "mqtt.tls_insecure: true needs TLS"),
        ('[mqtt]\npassword_file = "{tmp}/mqtt-password"', {}, "a broker password is set but mqtt.username is not"),
        ("", {"YOLO_EDGE_MQTT_PASSWORD": "pw"}, "a broker password is set but mqtt.username is not"),
        ('[mqtt]\npassword_file = "{tmp}/missing"', {}, "mqtt.password_file: '{tmp}/missing' does not exist"),
        ('[mqtt]\nusername = "u"\npassword_file = "{tmp}/empty-password"', {}, "mqtt.password_file: '{tmp}/empty-"),
        (
            '[mqtt]\nusername = "u"\npassword_file = "{tmp}/mqtt-password"',
            {"YOLO_EDGE_MQTT_PASSWORD": "pw"},
            "mqtt.password_file and YOLO_EDGE_MQTT_PASSWORD are both set",
        ),
        (
            '[model]\nclasses = ["person"]\nclass_confidence = {{ car = 0.5 }}',
            {},
            "model.class_confidence: 'car' is not in model.classes",
        ),
    ],
)
def test_keys_checked_together_and_on_disk(tmp_path, files, text, env, fragment):
    tmp = str(tmp_path)
    message = rejects(tmp_path, text.format(tmp=tmp), env, require_model=not text.startswith("[mqtt]"))
    assert fragment.format(tmp=tmp) in message


@pytest.mark.parametrize("model", ["bundle", "onnx"])
def test_model_path_is_a_bundle_or_onnx_file(tmp_path, files, model):
    assert load(tmp_path, f'[model]\npath = "{files[model]}"', require_model=True).model.path == files[model]


def test_tls_cert_and_key_together_are_fine(tmp_path, files):
    config = load(tmp_path, f'[mqtt]\ntls_cert = "{files["client.crt"]}"\ntls_key = "{files["client.key"]}"')
    assert config.mqtt.tls and config.mqtt.tls_ca is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[camera]\nuri = "0"', "unknown section [camera] in {path}; allowed sections: source, model, mqtt, events"),
        ('host = "x"', "unknown section [host] in {path}; allowed sections:"),
        (
            '[mqtt]\nhots = "x"',
            "unknown key mqtt.hots in {path}; allowed keys in [mqtt]: host, port, hosts, protocol, prefix",
        ),
        ("[source]\nmax_age = 1", "allowed keys in [source]: uri, loop, fps, max_frame_age, reconnect_max_s"),
        ("mqtt = 5", "mqtt in {path} must be a table"),
    ],
)
def test_unknown_sections_and_keys(tmp_path, text, fragment):
    assert fragment.format(path=tmp_path / "agent.toml") in rejects(tmp_path, text)


def test_several_problems_are_reported_on_one_line(tmp_path):
    message = rejects(tmp_path, "[mqtt]\nport = 0\nkeepalive = 1\n[stats]\ninterval = 0")
    assert message.count("; expected") == 3
    assert "mqtt.port: 0" in message and "mqtt.keepalive: 1" in message and "stats.interval: 0" in message


def test_password_in_file_is_rejected_without_echoing_it(tmp_path):
    message = rejects(tmp_path, '[mqtt]\nusername = "u"\npassword = "hunter2"')
    assert "mqtt.password is not allowed in" in message and "password_file" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("text", "env", "password"),
    [
        ('[mqtt]\nusername = "u"\npassword_file = "{tmp}/mqtt-password"', {}, "s3cret-from-file"),
        ('[mqtt]\nusername = "u"', {"YOLO_EDGE_MQTT_PASSWORD": "s3cret-from-env"}, "s3cret-from-env"),
    ],
)
def test_password_is_resolved_but_never_shown(tmp_path, files, text, env, password):
    config = load(tmp_path, text.format(tmp=tmp_path), env)
    assert config.mqtt.password == password
    assert password not in repr(config) and password not in str(config.mqtt)
    summary = config.redacted()
    assert password not in str(summary)
    assert summary["mqtt"]["password"] == "<redacted>" and summary["mqtt"]["username"] == "u"


def test_redacted_is_plain_data(tmp_path, files):
    summary = load(tmp_path, f'[model]\npath = "{files["bundle"]}"\nclasses = ["a"]', require_model=True).redacted()
    assert summary["model"]["path"] == str(files["bundle"])
    assert summary["model"]["classes"] == ["a"] and summary["model"]["class_confidence"] == {}
    assert summary["mqtt"]["password"] is None
    assert summary["config_file"] == str(tmp_path / "agent.toml")
    sections = {"source", "model", "mqtt", "events", "stats", "homeassistant", "snapshot", "remote", "deploy", "agent"}
    assert set(summary) == {"config_file", "zones", "lines", "motion", "tracking", *sections}
    assert summary["zones"] == {} and summary["lines"] == {"reset": "daily"}


@pytest.mark.parametrize(
    ("env", "text", "expected"),
    [
        ({"STATE_DIRECTORY": "/var/lib/yolo-edge"}, "", "/var/lib/yolo-edge"),
        ({"STATE_DIRECTORY": "/var/lib/yolo-edge:/var/lib/other"}, "", "/var/lib/yolo-edge"),
        ({"HOME": "/home/pi"}, "", "/home/pi/.local/state/yolo-edge"),
        ({"STATE_DIRECTORY": "/var/lib/yolo-edge"}, '[agent]\nstate_dir = "/srv/y"', "/srv/y"),
    ],
)
def test_state_dir(tmp_path, env, text, expected):
    assert load(tmp_path, text, env).agent.state_dir == Path(expected)


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("my.pi host", "my-pi-host"),
        ("raspberrypi", "raspberrypi"),
        ("pi_4-B", "pi_4-B"),
        ("cam.local", "cam-local"),
        ("küche", "k-che"),
        ("", "yolo-edge"),
    ],
)
def test_default_device_id(hostname, expected):
    assert default_device_id(hostname) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[mqtt\nport = 1", "is not valid TOML"),
        ("[mqtt]\nport = 1\nhost = broker", "line 3"),
        ("[mqtt]\nport = = 1", "line 2"),
    ],
)
def test_invalid_toml_names_file_and_line(tmp_path, text, fragment):
    message = rejects(tmp_path, text)
    assert str(tmp_path / "agent.toml") in message and fragment in message


BIG = "1" * 400  # a TOML integer has no size limit; a float, SQLite and onnxruntime's thread count do
NUMBER_KEYS = [
    (section, key.name, key.metadata["spec"].kind)
    for section, cls in SECTIONS.items()
    for key in dataclasses.fields(cls)
    if key.metadata and key.metadata["spec"].kind in ("int", "float", "thresholds")
]


def test_every_kind_of_numeric_key_is_covered():
    assert {kind for _, _, kind in NUMBER_KEYS} == {"int", "float", "thresholds"}


def numeric_line(key: str, kind: str, number: str) -> str:
    return f"{key} = {{ person = {number} }}" if kind == "thresholds" else f"{key} = {number}"


@pytest.mark.parametrize(("section", "key", "kind"), NUMBER_KEYS, ids=[f"{s}.{k}" for s, k, _ in NUMBER_KEYS])
def test_a_400_digit_number_is_refused_with_one_short_line(tmp_path, section, key, kind):
    for sign in ("", "-"):
        message = rejects(tmp_path, f"[{section}]\n{numeric_line(key, kind, sign + BIG)}")
        assert message.startswith(f"{section}.{key}: ") and "is not allowed; expected" in message, message
        assert len(message) < 250, message  # the value is cut, not echoed in full


def test_numbers_too_big_are_one_line_from_the_command(tmp_path):
    """The CLI as a user runs it: exit 2, one line naming every key, no traceback. An integer tomllib
    will not read (over Python's 4300 digits) is a TOML error like any other."""
    env = agent_env(tmp_path / "state")
    tables = {section: f"[{section}]" for section, _, _ in NUMBER_KEYS}
    for section, key, kind in NUMBER_KEYS:
        tables[section] += "\n" + numeric_line(key, kind, BIG)
    path = write(tmp_path, "\n".join(tables.values()))
    result = run_agent(["check", "--config", str(path)], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for section, key, _ in NUMBER_KEYS:
        assert f"{section}.{key}: " in result.stderr
    path = write(tmp_path, "[source]\nfps = " + "1" * 5000)
    result = run_agent(["run", "--dry-run", "--config", str(path)], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "is not valid TOML: an integer has more digits" in result.stderr


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*missing\.toml does not exist"):
        load_config(tmp_path / "missing.toml", env={}, require_model=False)
    with pytest.raises(ConfigError, match=rf"cannot read config file {re.escape(str(tmp_path))}"):
        load_config(tmp_path, env={}, require_model=False)
    (tmp_path / "latin1.toml").write_bytes(b'[mqtt]\nhost = "k\xfcche"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml is not UTF-8 text"):
        load_config(tmp_path / "latin1.toml", env={}, require_model=False)


def test_config_is_frozen(tmp_path):
    config = load(tmp_path, "[model]\nclass_confidence = { person = 0.5 }")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mqtt.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.model.class_confidence["car"] = 0.1  # type: ignore[index]


def test_example_file_loads_with_its_documented_defaults(tmp_path):
    config = load_config(EXAMPLE, env={}, overrides={("model", "path"): tmp_path})
    assert config.model.path == tmp_path
    example, defaults = config.redacted(), load_config(None, env={}, require_model=False).redacted()
    for summary in (example, defaults):
        summary.pop("config_file")
        summary["model"].pop("path")
    assert example == defaults


def test_example_file_points_at_the_deployed_bundle():
    deployed = "/var/lib/yolo-edge/bundles/current"
    assert tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["model"]["path"] == deployed
    if Path(deployed).exists():
        pytest.skip(f"{deployed} exists on this machine")
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, env={})
    assert str(caught.value) == f"model.path: '{deployed}' does not exist; expected a bundle directory or .onnx file"


def test_example_file_documents_every_key():
    documented, section = set(), None
    for line in EXAMPLE.read_text().splitlines():
        if match := re.fullmatch(r"\[(\w+)\]", line):
            section = match[1]
        elif match := re.fullmatch(r"# \[(zones|lines)\.\w+\]", line):
            section = f"{match[1]}.NAME"  # the commented example zone or line
        elif match := re.match(r"#? ?(\w+) = ", line):
            documented.add((section, match[1]))
    settings = AgentConfig()
    expected = (
        {
            (section.name, key.name)
            for section in dataclasses.fields(settings)
            if dataclasses.is_dataclass(getattr(settings, section.name))
            for key in dataclasses.fields(getattr(settings, section.name))
            if key.name not in ("password", "lines")  # never written in the file; [lines.NAME] tables below
        }
        | {("zones.NAME", key) for key in ZONE_KEYS}
        | {("lines.NAME", key) for key in LINE_KEYS}
    )
    assert documented == expected
