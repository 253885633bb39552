// The settings form of the open device: filled from its retained `settings`, sent as one `set` with a
// request id, answered by the `set/result` that carries the same id (other operators' answers are not ours).
//
// Values are sent as typed: the agent checks them (remote_settings.py) and its rejection is shown as it
// is, so the page needs no copy of the rules.

const ANSWER_TIMEOUT_MS = 10000;

export function requestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8)); // randomUUID needs a secure context; this page may be plain http
  return `dashboard-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function number(text) {
  const trimmed = text.trim();
  const value = Number(trimmed);
  return trimmed !== "" && Number.isFinite(value) ? value : trimmed; // not a number: the agent says why
}

function labels(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function perClass(text) {
  const table = {};
  for (const part of labels(text)) {
    const [label, threshold = ""] = part.split("=").map((s) => s.trim());
    table[label] = number(threshold);
  }
  return table;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class SettingsForm {
  constructor(form, result, send) {
    this.form = form;
    this.result = result;
    this.send = send; // (payload string) -> bool: published or not
    this.settings = null;
    this.pending = null; // { id, timer }
    this.edited = false;
    form.addEventListener("input", () => (this.edited = true));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  reset() {
    this.settings = null;
    this.edited = false;
    this._answer("none", "");
    if (this.pending) clearTimeout(this.pending.timer);
    this.pending = null;
    this.form.reset();
  }

  // The retained `settings`: what is in force. Fills the form unless the user is typing into it.
  inForce(settings) {
    this.settings = settings;
    if (this.edited) return;
    const f = this.form.elements;
    f.confidence.value = settings.confidence ?? "";
    f.iou.value = settings.iou ?? "";
    f.max_fps.value = settings.max_fps ?? "";
    f.classes.value = (settings.classes || []).join(", ");
    f.class_confidence.value = Object.entries(settings.class_confidence || {})
      .map(([label, t]) => `${label}=${t}`)
      .join(", ");
    f.publish_detections.checked = settings.publish_detections !== false;
  }

  // Only what differs from the settings in force, so the answer's `applied` says what this form changed.
  changes() {
    const f = this.form.elements;
    const wanted = {
      confidence: number(f.confidence.value),
      iou: number(f.iou.value),
      max_fps: number(f.max_fps.value),
      classes: labels(f.classes.value),
      class_confidence: perClass(f.class_confidence.value),
      publish_detections: f.publish_detections.checked,
    };
    const now = this.settings || {};
    return Object.fromEntries(Object.entries(wanted).filter(([key, value]) => !same(value, now[key])));
  }

  submit() {
    const id = requestId();
    const body = { ...this.changes(), request_id: id };
    if (!this.send(JSON.stringify(body))) {
      this._answer("error", "not connected to the broker: nothing sent");
      return;
    }
    if (this.pending) clearTimeout(this.pending.timer);
    const timer = setTimeout(() => {
      if (this.pending && this.pending.id === id) {
        this.pending = null;
        this._answer("timeout", `no answer within ${ANSWER_TIMEOUT_MS / 1000} s (is the device online, and [remote] settings on?)`);
      }
    }, ANSWER_TIMEOUT_MS);
    this.pending = { id, timer };
    const keys = Object.keys(body).filter((k) => k !== "request_id");
    this._answer("pending", keys.length ? `sent ${keys.join(", ")}; waiting for the device` : "nothing changed; asking for the settings in force");
  }

  // A `set/result`: ours only if it carries our request id.
  answer(body) {
    if (!this.pending || body.request_id !== this.pending.id) return;
    clearTimeout(this.pending.timer);
    this.pending = null;
    if (body.ok) {
      const applied = Object.entries(body.applied || {}).map(([k, v]) => `${k} = ${JSON.stringify(v)}`);
      this._answer("ok", applied.length ? `applied: ${applied.join(", ")}` : "applied: nothing to change");
      this.edited = false;
      if (body.settings) this.inForce(body.settings);
    } else {
      this._answer("rejected", `rejected: ${body.error || "no reason given"}`);
    }
  }

  _answer(state, message) {
    this.result.dataset.state = state;
    this.result.textContent = message;
  }
}
