// The dashboard: a fleet table from every device's retained status and stats, and one device opened
// at a time, whose heavy topics (detections, snapshots) are subscribed to only while it is open.
import { Broker } from "./broker.js";
import { LatencyChart } from "./chart.js";
import { FleetTable } from "./fleet.js";
import { clock, el, parseJson, shortId, text } from "./format.js";
import { FrameView } from "./frame.js";
import { SettingsForm } from "./settings.js";

const $ = (id) => document.getElementById(id);
const LOG_LINES = 200;
const CREDENTIALS_KEY = "yolo-edge-dashboard-login"; // sessionStorage, only when the box is ticked
// What an open device adds to the fleet's subscriptions (topics from agent/transport/topics.py).
const DEVICE_TOPICS = [
  "detections", "snapshot", "snapshot/clean", "objects", "events", "zones", "lines", "settings", "set/result",
];

const broker = new Broker();
let prefix = "yolo-edge";
let open = null; // the id of the device shown
const fleet = new FleetTable($("fleet-rows"), $("fleet-empty"), $("device-count"), (id) => openDevice(id));
const frame = new FrameView($("frame"), $("frame-caption"));
const chart = new LatencyChart($("latency-chart"));
const settings = new SettingsForm($("settings-form"), $("set-result"), (payload) =>
  broker.publish(`${prefix}/${open}/set`, payload),
);

function logLine(list, line, attrs = {}) {
  list.prepend(el("li", attrs, line));
  while (list.children.length > LOG_LINES) list.lastChild.remove();
}

// -- the connection ------------------------------------------------------------------------------
const STATE_TEXT = {
  idle: "not connected",
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "broker lost: reconnecting…",
  disconnected: "disconnected",
  refused: "login refused",
};

broker.addEventListener("state", (event) => {
  const { state, detail } = event.detail;
  const chip = $("connection");
  chip.dataset.state = state;
  chip.textContent = STATE_TEXT[state] || state;
  document.body.dataset.connection = state;
  const now = clock(Date.now() / 1000);
  logLine($("connection-log"), `${now} ${STATE_TEXT[state] || state}${detail ? `: ${detail}` : ""}`, { "data-state": state });
  const live = state !== "idle" && state !== "refused";
  $("connect").hidden = live;
  $("disconnect").hidden = !live;
});

function startConnection(url, username, password) {
  broker.subscribe([`${prefix}/+/status`, `${prefix}/+/stats`]);
  broker.connect(url, username, password);
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const url = $("broker-url").value.trim();
  const username = $("username").value;
  const password = $("password").value;
  if ($("remember").checked) sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify({ url, username, password }));
  else sessionStorage.removeItem(CREDENTIALS_KEY);
  startConnection(url, username, password);
});
$("disconnect").addEventListener("click", () => broker.close());

// -- messages ------------------------------------------------------------------------------------
function where(topic) {
  if (!topic.startsWith(`${prefix}/`)) return null;
  const rest = topic.slice(prefix.length + 1);
  const slash = rest.indexOf("/");
  return slash > 0 ? [rest.slice(0, slash), rest.slice(slash + 1)] : null;
}

broker.onMessage((topic, payload, retained) => {
  const at = where(topic);
  if (!at) return;
  const [id, kind] = at;
  if (kind === "status") {
    fleet.device(id).status = text(payload) || null;
    fleet.render();
    if (id === open) showStatus();
    return;
  }
  if (kind === "stats") {
    const body = parseJson(payload);
    if (!body) return;
    const device = fleet.device(id);
    device.addStats(body);
    fleet.render();
    if (id === open) chart.show(device.history);
    return;
  }
  if (id !== open) return; // a device's own topics arrive only while it is open; late ones after a close are dropped
  if (kind === "snapshot" || kind === "snapshot/clean") {
    if (payload.length) frame.snapshot(payload, kind === "snapshot" ? "drawn" : "clean");
    return;
  }
  const body = parseJson(payload);
  if (!body) return;
  if (kind === "detections") frame.detectionsMessage(body);
  else if (kind === "zones") showZones(body);
  else if (kind === "lines") showLines(body);
  else if (kind === "settings") settings.inForce(body);
  else if (kind === "set/result" && !retained) settings.answer(body);
  else if (kind === "objects") logObject(body);
  else if (kind === "events") logEvent(body);
});

// -- one device ----------------------------------------------------------------------------------
function deviceFilters(id) {
  return DEVICE_TOPICS.map((t) => `${prefix}/${id}/${t}`);
}

function showStatus() {
  const device = fleet.device(open);
  const chip = $("device-status");
  const quiet = device.quiet(Date.now() / 1000);
  chip.textContent = quiet ? `${device.status}, silent` : device.status || "unknown";
  chip.dataset.state = quiet ? "quiet" : device.status || "unknown";
}

function openDevice(id) {
  if (open === id) return;
  closeDevice();
  open = id;
  fleet.selected = id;
  $("device-name").textContent = id;
  $("device").hidden = false;
  $("device").dataset.device = id;
  frame.reset();
  settings.reset();
  $("objects-log").replaceChildren();
  $("events-log").replaceChildren();
  showZones(null);
  showLines(null);
  showStatus();
  chart.show(fleet.device(id).history);
  broker.subscribe(deviceFilters(id));
  fleet.render();
  $("device").scrollIntoView({ behavior: "smooth", block: "start" });
}

function closeDevice() {
  if (open === null) return;
  broker.unsubscribe(deviceFilters(open));
  open = null;
  fleet.selected = null;
  $("device").hidden = true;
  delete $("device").dataset.device;
  chart.clear();
  fleet.render();
}

$("close-device").addEventListener("click", closeDevice);
$("snapshot-now").addEventListener("click", () => {
  const sent = broker.publish(`${prefix}/${open}/snapshot/request`, "");
  $("frame-caption").textContent = sent ? "snapshot asked for…" : "not connected to the broker: nothing sent";
});

function showZones(body) {
  const tbody = $("zones").tBodies[0];
  const zones = body && body.zones && typeof body.zones === "object" ? body.zones : {};
  tbody.replaceChildren(
    ...Object.entries(zones).map(([name, counts]) => {
      const present = Object.entries(counts || {}).filter(([, n]) => n > 0);
      const what = present.length ? present.map(([label, n]) => `${n} ${label}`).join(", ") : "empty";
      return el("tr", { "data-zone": name, class: present.length ? "occupied" : "" }, el("th", {}, name), el("td", {}, what));
    }),
  );
  $("zones-empty").hidden = Object.keys(zones).length > 0;
  frame.zones(body);
}

// Per line: "in N" and "out M" (every label), each label's share in the cell's title.
function showLines(body) {
  const tbody = $("lines").tBodies[0];
  const lines = body && body.lines && typeof body.lines === "object" ? body.lines : {};
  const cell = (direction, perLabel) => {
    const entries = Object.entries(perLabel && typeof perLabel === "object" ? perLabel : {});
    const total = entries.reduce((sum, [, n]) => sum + (typeof n === "number" ? n : 0), 0);
    const title = entries.map(([label, n]) => `${n} ${label}`).join(", ");
    return el("td", { "data-direction": direction, title: title || "none" }, `${direction} ${total}`);
  };
  tbody.replaceChildren(
    ...Object.entries(lines).map(([name, counts]) =>
      el("tr", { "data-line": name }, el("th", {}, name), cell("in", counts && counts.in), cell("out", counts && counts.out)),
    ),
  );
  const since = body && typeof body.since === "number" ? new Date(body.since * 1000) : null;
  $("lines-since").textContent = since && Object.keys(lines).length ? `since ${since.toLocaleString([], { hour12: false })}` : "";
  $("lines-empty").hidden = Object.keys(lines).length > 0;
  frame.lines(body);
}

function logObject(o) {
  if (o.type === "cross") {
    const line = `${clock(o.ts)} ${o.label} #${shortId(o.id)} crossed ${o.line} (${o.direction})`;
    logLine($("objects-log"), line, { "data-type": "cross" });
    return;
  }
  const where = (o.zones || []).length ? ` in ${o.zones.join(", ")}` : "";
  const still = o.stationary ? ", stationary" : "";
  const line = `${clock(o.ts)} ${o.type} ${o.label} #${shortId(o.id)} ${Math.round((o.score || 0) * 100)}%${where}${still}`;
  logLine($("objects-log"), line, { "data-type": String(o.type) });
}

function logEvent(e) {
  const line = `${clock(e.ts)} ${e.type} ${e.label} ×${e.count} (max ${Math.round((e.max_confidence || 0) * 100)}%)`;
  logLine($("events-log"), line, { "data-type": String(e.type) });
}

// Ages tick by themselves, and a device whose stats stop coming must turn grey without a message.
setInterval(() => {
  fleet.render();
  if (open !== null) showStatus();
}, 1000);

// -- start ---------------------------------------------------------------------------------------
async function start() {
  let config = {};
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch {
    // served some other way (a file, another server): the user types the broker's URL
  }
  prefix = config.prefix || prefix;
  $("broker-url").value = config.broker_ws || `ws://${location.hostname || "localhost"}:9001`;
  const kept = sessionStorage.getItem(CREDENTIALS_KEY);
  if (kept) {
    const login = JSON.parse(kept);
    $("broker-url").value = login.url || $("broker-url").value;
    $("username").value = login.username || "";
    $("password").value = login.password || "";
    $("remember").checked = true;
    startConnection($("broker-url").value, login.username, login.password);
  }
  document.body.dataset.ready = "true";
}

start();
