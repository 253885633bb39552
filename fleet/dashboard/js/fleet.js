// The fleet table: one row per device, from its retained `status` and `stats` and their updates.
import { DASH, age, el, fixed } from "./format.js";

const QUIET_INTERVALS = 3; // a device that missed this many stats intervals is greyed out
const DEFAULT_INTERVAL_S = 10; // [stats] interval's default, for stats that do not say their window
const HISTORY_POINTS = 720; // an hour of stats at 5 s; the chart needs no more

export class Device {
  constructor(id) {
    this.id = id;
    this.status = null;
    this.stats = null;
    this.history = []; // every stats payload received since the page opened (the retained one first)
  }

  addStats(stats) {
    if (typeof stats.ts !== "number") return;
    if (this.stats && stats.ts <= this.stats.ts) return; // a repeat of the retained one after a reconnect
    this.stats = stats;
    this.history.push(stats);
    if (this.history.length > HISTORY_POINTS) this.history.shift();
  }

  get interval() {
    const window = this.stats && this.stats.window_s;
    return typeof window === "number" && window > 0 ? window : DEFAULT_INTERVAL_S;
  }

  lastSeen() {
    return this.stats ? this.stats.ts : null;
  }

  // Quiet: said it is online but its stats stopped coming (a cut network, a hung device).
  quiet(now) {
    const seen = this.lastSeen();
    return this.status === "online" && (seen === null || now - seen > QUIET_INTERVALS * this.interval);
  }
}

function cells(device, now) {
  const s = device.stats || {};
  const inference = (s.latency_ms && s.latency_ms.inference) || {};
  const model = s.model || {};
  const mqtt = s.mqtt || {};
  let temperature = fixed(s.cpu_temp_c, 1, " °C");
  // vcgencmd get_throttled: bits 0-3 now (under-voltage, capped, throttled, soft limit), 16+ since boot.
  if (typeof s.throttled === "number" && s.throttled & 0xf) temperature += " throttled";
  const seen = device.lastSeen();
  return {
    status: device.status || "unknown",
    fps: fixed(s.fps, 1),
    inference_p50: fixed(inference.p50, 1, " ms"),
    inference_p95: fixed(inference.p95, 1, " ms"),
    precision: model.precision || DASH,
    model: model.name || DASH,
    outbox: typeof mqtt.outbox_pending === "number" ? String(mqtt.outbox_pending) : DASH,
    temperature,
    last_seen: seen === null ? DASH : `${age(now - seen)} ago`,
  };
}

const FIELDS = ["status", "fps", "inference_p50", "inference_p95", "precision", "model", "outbox", "temperature", "last_seen"];
const NUMERIC = new Set(["fps", "inference_p50", "inference_p95", "outbox", "temperature", "last_seen"]);
const WIDE = new Set(["inference_p95", "model"]); // hidden on a phone-width window

export class FleetTable {
  constructor(tbody, empty, count, onOpen) {
    this.tbody = tbody;
    this.empty = empty;
    this.count = count;
    this.onOpen = onOpen;
    this.devices = new Map();
    this.rows = new Map();
    this.selected = null;
  }

  device(id) {
    let device = this.devices.get(id);
    if (!device) {
      device = new Device(id);
      this.devices.set(id, device);
    }
    return device;
  }

  _row(id) {
    let row = this.rows.get(id);
    if (row) return row;
    const name = el("button", { type: "button", class: "link" }, id);
    name.addEventListener("click", () => this.onOpen(id));
    row = el("tr", { "data-device": id }, el("th", { scope: "row" }, name));
    for (const field of FIELDS) {
      const classes = [NUMERIC.has(field) ? "num" : "", WIDE.has(field) ? "wide" : ""].join(" ").trim();
      row.append(el("td", { "data-field": field, ...(classes ? { class: classes } : {}) }));
    }
    row.addEventListener("click", (event) => {
      if (event.target === row || event.target.tagName === "TD") this.onOpen(id);
    });
    const ids = [...this.rows.keys(), id].sort();
    const after = ids[ids.indexOf(id) + 1];
    this.tbody.insertBefore(row, after ? this.rows.get(after) : null);
    this.rows.set(id, row);
    return row;
  }

  render(now = Date.now() / 1000) {
    for (const device of this.devices.values()) {
      const row = this._row(device.id);
      const values = cells(device, now);
      for (const field of FIELDS) {
        const cell = row.querySelector(`[data-field="${field}"]`);
        if (cell.textContent !== values[field]) cell.textContent = values[field];
      }
      const quiet = device.quiet(now);
      row.dataset.status = device.status || "unknown";
      row.dataset.quiet = String(quiet);
      row.classList.toggle("quiet", quiet || (device.status !== null && device.status !== "online"));
      row.classList.toggle("selected", device.id === this.selected);
      row.querySelector('[data-field="status"]').dataset.value = quiet ? "quiet" : device.status || "unknown";
    }
    this.empty.hidden = this.devices.size > 0;
    this.count.textContent = this.devices.size ? `(${this.devices.size})` : "";
  }
}
