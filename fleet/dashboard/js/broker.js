// The page's one MQTT connection (mqtt.js over WebSockets) and what it is subscribed to.
//
// Subscriptions are kept here, not in mqtt.js alone, so that they are made again on every connect
// (the session is clean: the broker forgets them when the socket drops) and a device's topics can
// be dropped when its view closes.
import mqtt from "../vendor/mqtt.esm.js";

export class Broker extends EventTarget {
  constructor() {
    super();
    this.client = null;
    this.filters = new Set();
    this.handlers = [];
  }

  get connected() {
    return Boolean(this.client && this.client.connected);
  }

  // state: "connecting" | "connected" | "reconnecting" | "disconnected" | "refused"; detail: a short reason.
  _state(state, detail = "") {
    // Each failed retry closes the socket again: one line per change, not one every 2 s.
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
  }

  connect(url, username, password) {
    this.close();
    const id = Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join("");
    const client = mqtt.connect(url, {
      clientId: `yolo-edge-dashboard-${id}`,
      username: username || undefined,
      password: password || undefined,
      protocolVersion: 4,
      clean: true,
      keepalive: 20,
      connectTimeout: 5000,
      reconnectPeriod: 2000,
      resubscribe: false, // ours, below: the set of filters changes while disconnected
    });
    this.client = client;
    this._state("connecting", url);
    client.on("connect", () => {
      this._state("connected", url);
      if (this.filters.size) client.subscribe([...this.filters], { qos: 0 });
    });
    client.on("reconnect", () => this._state("reconnecting", url));
    client.on("close", () => {
      // mqtt.js retries by itself unless we ended the client: that is "reconnecting", shown as such.
      if (this.client === client && !client.disconnecting) this._state("reconnecting", "connection lost, retrying every 2 s");
    });
    client.on("error", (error) => {
      const text = String(error && error.message ? error.message : error);
      // A refused login does not get better by retrying every 2 s: stop and say so.
      if (/not authori[sz]ed|bad user ?name or password/i.test(text)) {
        client.end(true);
        this._state("refused", text);
      } else {
        this._state(this.connected ? "connected" : "disconnected", text);
      }
    });
    client.on("message", (topic, payload, packet) => {
      for (const handler of this.handlers) handler(topic, payload, packet.retain);
    });
  }

  close() {
    if (this.client) {
      const client = this.client;
      this.client = null;
      client.end(true);
      this._state("idle", "disconnected");
    }
  }

  onMessage(handler) {
    this.handlers.push(handler);
  }

  subscribe(filters) {
    const fresh = filters.filter((f) => !this.filters.has(f));
    fresh.forEach((f) => this.filters.add(f));
    if (fresh.length && this.connected) this.client.subscribe(fresh, { qos: 0 });
  }

  unsubscribe(filters) {
    const held = filters.filter((f) => this.filters.delete(f));
    if (held.length && this.connected) this.client.unsubscribe(held);
  }

  // payload: a string or bytes; false when not connected (the caller says so rather than queueing).
  publish(topic, payload, qos = 1) {
    if (!this.connected) return false;
    this.client.publish(topic, payload, { qos, retain: false });
    return true;
  }
}
