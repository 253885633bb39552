"""The dashboard in headless Chromium against a real Mosquitto (with a WebSocket listener) and a real agent.

One agent loops the sample video for the whole module, the page is opened once, and the tests run in
order on it: the fleet row, the device view, the counting line and a crossing, a `set` from the form and
a rejected one, a broker restart, the agent's clean stop, and last a device of an older agent (a drawn
snapshot only). Every wait is on a condition with a timeout. The fleet and device views
are saved as dashboard-fleet.png and dashboard-device.png in the test's folder, or in docs/img (the
README's pictures) with YOLO_EDGE_SCREENSHOTS=1, so that a test run leaves the checkout as it was.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.pipeline.detections import Detections
from agent.pipeline.snapshot import SnapshotSettings, box_tag, snapshot_jpegs
from fleet.dashboard_server import DashboardServer, PageConfig
from tests.agent.agent_process import PREFIX, AgentProcess, Observer, agent_env, broker_args
from tests.broker import Broker

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="the dashboard tests need Debian's chromium (apt install chromium; make test does)"
)
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "img" if os.environ.get("YOLO_EDGE_SCREENSHOTS") == "1" else None
DEVICE = "porch"
WAIT_MS = 15_000
EMPTY = "\u2013"  # what a cell shows before its figure came (an en dash)
POSITIVE = re.compile(r"^(0\.0*[1-9]|[1-9])")  # a number > 0 as the table writes it
COUNT = re.compile(r"^[1-9][0-9]*$")
TWO_OR_MORE = re.compile(r"^([2-9]|[1-9][0-9]+)$")
ZONE = """
[zones.right_half]
polygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
inertia = 2
"""
# Drawn upwards, so its right (`in`) is the image's right: the sample video's square walks through it left
# to right once per loop (its bottom centre from x 0.40 to 0.54 at y about 0.6), the other shapes never.
LINE = """
[lines.gate]
points = [[0.44, 0.85], [0.44, 0.45]]
"""
CROSSING_MS = 30_000  # one loop of the video at 8 fps is 11 s: a crossing comes within two


@dataclass(frozen=True)
class Stack:
    broker: Broker
    agent: AgentProcess
    server: DashboardServer
    workdir: Path


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fixture_onnx: Path, sample_video: tuple[Path, list]
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("dashboard")
    broker = Broker(workdir, websockets=True).start()
    config = workdir / "agent.toml"
    config.write_text(ZONE + LINE)
    args = ["run", "--config", str(config), "--source", str(sample_video[0]), "--loop", "--model", str(fixture_onnx)]
    env = agent_env(workdir / "state", source_fps=8, stats_interval=1)
    server = DashboardServer("127.0.0.1", 0, PageConfig(broker.ws_url, PREFIX)).start()
    try:
        with AgentProcess([*args, *broker_args(broker.host, broker.port, DEVICE)], env, workdir) as agent:
            yield Stack(broker, agent, server, workdir)
    finally:
        server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(stack.server.url)
            page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
            page.click("#connect")
            page.wait_for_selector('body[data-connection="connected"]', timeout=WAIT_MS)
            page.errors = errors  # type: ignore[attr-defined]
            yield page
        finally:
            browser.close()


def row(page, field: str):  # type: ignore[no-untyped-def]
    return page.locator(f'tr[data-device="{DEVICE}"] [data-field="{field}"]')


def test_the_device_row_appears_online_with_a_live_fps(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect(row(page, "status")).to_have_text("online", timeout=WAIT_MS)
    expect(row(page, "fps")).to_have_text(POSITIVE, timeout=WAIT_MS)
    for field in ("inference_p50", "precision", "outbox", "last_seen"):
        expect(row(page, field)).not_to_have_text(EMPTY, timeout=WAIT_MS)
    expect(row(page, "precision")).to_have_text("fp32")
    expect(page.locator(f'tr[data-device="{DEVICE}"]')).to_have_attribute("data-quiet", "false")
    shots = SCREENSHOTS or stack.workdir
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "dashboard-fleet.png"))
    assert page.errors == [], "\n".join(page.errors)  # type: ignore[attr-defined]


def test_opening_the_device_shows_the_snapshot_with_the_live_boxes_chart_and_logs(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.click(f'tr[data-device="{DEVICE}"] button')
    expect(page.locator("#device")).to_have_attribute("data-device", DEVICE)
    # The agent's frame with nothing drawn on it: the page's boxes are the only ones (see docs/fleet.md).
    expect(page.locator("#frame")).to_have_attribute("data-snapshot", "clean", timeout=WAIT_MS)
    # Boxes drawn now (the detections of the last 1.5 s), and a chart of at least two stats. (Conditions
    # are Playwright's expect: the page's Content-Security-Policy forbids the eval wait_for_function needs.)
    expect(page.locator("#frame")).to_have_attribute("data-boxes", COUNT, timeout=WAIT_MS)
    expect(page.locator("#latency-chart")).to_have_attribute("data-points", TWO_OR_MORE, timeout=WAIT_MS)
    expect(page.locator("#objects-log li").first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator('#zones tr[data-zone="right_half"]')).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#frame")).to_have_attribute("data-zones", "1")  # its outline, from the retained zones
    expect(page.locator("#frame")).to_have_attribute("data-lines", "1", timeout=WAIT_MS)  # from the retained lines
    expect(page.locator('#settings-form input[name="confidence"]')).to_have_value("0.25", timeout=WAIT_MS)
    # The canvas holds a picture, not one flat colour.
    distinct = page.evaluate(
        """() => {
          const c = document.getElementById('frame');
          const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const seen = new Set();
          for (let i = 0; i < data.length; i += 4 * 97) seen.add(data[i] << 16 | data[i + 1] << 8 | data[i + 2]);
          return seen.size;
        }"""
    )
    assert distinct > 10, distinct
    # A fresh frame on request, so the screenshot's boxes sit on the shapes in the picture.
    page.click("#snapshot-now")
    expect(page.locator("#frame-caption")).to_contain_text("snapshot received", timeout=WAIT_MS)
    expect(page.locator("#frame")).to_have_attribute("data-boxes", COUNT, timeout=WAIT_MS)
    page.screenshot(path=str((SCREENSHOTS or stack.workdir) / "dashboard-device.png"), full_page=True)
    # A phone-width window: everything fits its width (the fleet table scrolls inside its card).
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        # The chart re-fits when its ResizeObserver fires, a frame or two after the resize. (Polled:
        # the page's Content-Security-Policy forbids the eval that wait_for_function needs.)
        overflow_js = "() => document.documentElement.scrollWidth - window.innerWidth"
        deadline = time.monotonic() + WAIT_MS / 1000
        while (overflow := page.evaluate(overflow_js)) > 0 and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert overflow <= 0, f"the page is {overflow} px wider than a phone's window"
        page.screenshot(path=str(stack.workdir / "phone.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def drawn_tags(page) -> list[str]:  # type: ignore[no-untyped-def]
    return json.loads(page.locator("#frame").get_attribute("data-tags") or "[]")


def test_the_line_its_counts_and_a_crossing_are_shown_and_each_box_is_drawn_once_as_the_agent_tags_it(
    page,  # type: ignore[no-untyped-def]
    stack: Stack,
) -> None:
    from playwright.sync_api import expect

    crossing = page.locator('#objects-log li[data-type="cross"]').first
    expect(crossing).to_have_text(re.compile(r" square #\S{1,6} crossed gate \(in\)$"), timeout=CROSSING_MS)
    counts = page.locator('#lines tr[data-line="gate"]')
    expect(counts.locator('[data-direction="in"]')).to_have_text(re.compile(r"^in [1-9][0-9]*$"), timeout=WAIT_MS)
    expect(counts.locator('[data-direction="out"]')).to_have_text(re.compile(r"^out [0-9]+$"))
    # One drawing per box, over the clean frame, tagged as the agent's snapshots tag it: every tag the page
    # drew is box_tag() of a detection the agent sent. (Both read the same messages; the observer may have
    # missed the one the page drew last, so the page's next drawing is waited for.)
    expect(page.locator("#frame")).to_have_attribute("data-snapshot", "clean")
    with closing(Observer(stack.broker.host, stack.broker.port, DEVICE, names=("detections",))) as observer:
        observer.wait_count("detections", 1, WAIT_MS / 1000)
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            sent = {
                box_tag(d["label"], d["confidence"], d["track_id"])
                for m in list(observer.on("detections"))
                for d in m.json()["detections"]
            }
            tags = drawn_tags(page)
            if (tags and set(tags) <= sent) or time.monotonic() > deadline:
                break
            page.wait_for_timeout(100)
    # (The canvas under the tags is the clean snapshot, checked above: no box of it is drawn a second time.)
    assert tags and set(tags) <= sent, (tags, sorted(sent)[:10])


def retained_settings(broker: Broker) -> Observer:
    return Observer(broker.host, broker.port, DEVICE, names=("settings", "set"))


def test_a_set_from_the_form_changes_the_agents_settings_and_shows_the_answer(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    with closing(retained_settings(stack.broker)) as observer:
        page.fill('#settings-form input[name="confidence"]', "0.4")
        page.fill('#settings-form input[name="max_fps"]', "6")
        page.click('#settings-form button[type="submit"]')
        expect(page.locator("#set-result")).to_have_attribute("data-state", "ok", timeout=WAIT_MS)
        expect(page.locator("#set-result")).to_contain_text("confidence = 0.4")
        sent = observer.wait_count("set", 1, 5)[0].json()
        assert sent["confidence"] == 0.4 and sent["max_fps"] == 6 and sent["request_id"].startswith("dashboard-")
        assert set(sent) == {"confidence", "max_fps", "request_id"}, "only what the form changed is sent"
    with closing(retained_settings(stack.broker)) as fresh:  # what a newcomer is given: the retained settings
        fresh.wait_for("retained settings", lambda: any(m.retain for m in fresh.on("settings")), 5)
        kept = next(m for m in fresh.on("settings") if m.retain).json()
    assert kept["confidence"] == 0.4 and kept["max_fps"] == 6, kept


def test_a_bad_value_shows_the_agents_rejection(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.fill('#settings-form input[name="iou"]', "2")
    page.click('#settings-form button[type="submit"]')
    expect(page.locator("#set-result")).to_have_attribute("data-state", "rejected", timeout=WAIT_MS)
    expect(page.locator("#set-result")).to_contain_text("iou: 2 is not allowed")


def test_an_answer_to_someone_elses_request_is_not_shown(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    with closing(Observer(stack.broker.host, stack.broker.port, DEVICE, names=("set/result",))) as other:
        page.fill('#settings-form input[name="iou"]', "0.5")
        page.click('#settings-form button[type="submit"]')
        # Another operator's rejection, published while ours is pending: the page must not take it.
        foreign = {"ok": False, "ts": 1.0, "error": "someone else's", "keys": [], "request_id": "other-operator"}
        other.client.publish(f"{PREFIX}/{DEVICE}/set/result", json.dumps(foreign), qos=1)
        expect(page.locator("#set-result")).to_have_attribute("data-state", "ok", timeout=WAIT_MS)
        expect(page.locator("#set-result")).to_contain_text("iou = 0.5")


def test_a_broker_restart_is_shown_and_the_page_reconnects(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    stack.broker.stop()
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    stack.broker.start()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(row(page, "status")).to_have_text("online", timeout=WAIT_MS)
    assert page.locator('#connection-log li[data-state="reconnecting"]').count() >= 1


def test_stopping_the_agent_turns_its_row_to_stopped(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    code, _ = stack.agent.stop(timeout=10)
    assert code == 0, stack.agent.describe()
    expect(row(page, "status")).to_have_text("stopped", timeout=WAIT_MS)
    expect(page.locator(f'tr[data-device="{DEVICE}"]')).to_have_class(re.compile(r"\bquiet\b"))
    expect(page.locator("#device-status")).to_have_text("stopped")
    assert page.errors == [], "\n".join(page.errors)  # type: ignore[attr-defined]


def test_a_device_with_only_a_drawn_snapshot_shows_it_and_draws_no_second_box(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """An agent from before snapshot/clean: its picture has the boxes of its moment burned in, so the page
    draws no live box over it (one drawing per object), and says why."""
    from playwright.sync_api import expect

    old = "old-pi"
    image = np.full((240, 320, 3), 90, np.uint8)
    found = Detections(np.array([[40.0, 40.0, 120.0, 120.0]]), np.array([0.9]), np.array([0]))
    jpeg = snapshot_jpegs(image, found, {0: "circle"}, SnapshotSettings()).drawn
    detection = {"label": "circle", "class_id": 0, "confidence": 0.9, "box": [0.1, 0.2, 0.3, 0.4], "track_id": "t-1"}
    with closing(Observer(stack.broker.host, stack.broker.port, old, names=("status",))) as device:
        device.client.publish(f"{PREFIX}/{old}/status", "online", qos=1, retain=True).wait_for_publish(5)
        device.client.publish(f"{PREFIX}/{old}/snapshot", jpeg, qos=1, retain=True).wait_for_publish(5)
        page.click(f'tr[data-device="{old}"] button')
        expect(page.locator("#frame")).to_have_attribute("data-snapshot", "drawn", timeout=WAIT_MS)
        expect(page.locator("#frame-caption")).to_contain_text("drawn by the agent")
        body = {"frame": 1, "ts": time.time(), "source": {"width": 320, "height": 240}, "detections": [detection]}
        device.client.publish(f"{PREFIX}/{old}/detections", json.dumps(body), qos=1).wait_for_publish(5)
        expect(page.locator("#frame")).to_have_attribute("data-detections", "1", timeout=WAIT_MS)
        expect(page.locator("#frame")).to_have_attribute("data-boxes", "0")
    assert page.errors == [], "\n".join(page.errors)  # type: ignore[attr-defined]
