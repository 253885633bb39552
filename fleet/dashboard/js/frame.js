// The latest snapshot of the open device with its live layers drawn over it on a canvas: zone outlines
// (the retained `zones`' `polygons`), counting lines with their counts (the retained `lines`) and the
// boxes of the newest `detections`, which fade out once none came for BOX_TTL_MS (the agent sends
// nothing for empty frames).
//
// One drawing per object: the background is the agent's `snapshot/clean`, the snapshot's frame with
// nothing drawn on it, so every box on the canvas is the page's own. An older agent sends the drawn
// `snapshot` alone, whose boxes and zones belong to its moment: it is shown as it is, with no boxes or
// zones of the page over it (docs/fleet.md).
import { drawBoxes, drawLines, drawZones } from "./layers.js";

const BOX_TTL_MS = 1500;

export class FrameView {
  constructor(canvas, caption) {
    this.canvas = canvas;
    this.caption = caption;
    this.timer = null;
    this.reset();
  }

  reset() {
    if (this.imageUrl) URL.revokeObjectURL(this.imageUrl);
    this.image = null;
    this.imageUrl = null;
    this.kind = "none"; // of the picture shown: "clean" or "drawn"
    this.cleanSeen = false; // from then on a drawn snapshot is not wanted, even while the clean one loads
    this.loads = 0;
    this.detections = [];
    this.detectionsAt = 0;
    this.polygons = {};
    this.linePoints = {};
    this.lineCounts = {};
    this.canvas.dataset.detections = "0";
    this.caption.textContent = "waiting for a snapshot";
    this.draw();
  }

  // kind: "clean" (from `snapshot/clean`) or "drawn" (from `snapshot`).
  snapshot(payload, kind) {
    if (kind === "drawn" && this.cleanSeen) return;
    if (kind === "clean") this.cleanSeen = true;
    const load = ++this.loads;
    const url = URL.createObjectURL(new Blob([payload], { type: "image/jpeg" }));
    const image = new Image();
    image.onload = () => {
      if (load !== this.loads) return URL.revokeObjectURL(url); // a newer one is on its way
      if (this.imageUrl) URL.revokeObjectURL(this.imageUrl);
      this.image = image;
      this.imageUrl = url;
      this.kind = kind;
      const at = new Date().toLocaleTimeString([], { hour12: false });
      this.caption.textContent =
        kind === "clean"
          ? `snapshot received ${at}`
          : `snapshot received ${at}, its boxes drawn by the agent (an agent too old to send its frame clean: no live boxes over it)`;
      this.draw();
    };
    image.onerror = () => {
      URL.revokeObjectURL(url);
      this.caption.textContent = "the snapshot is not a JPEG the browser can show";
    };
    image.src = url;
  }

  detectionsMessage(body) {
    this.detections = Array.isArray(body.detections) ? body.detections : [];
    this.detectionsAt = performance.now();
    this.canvas.dataset.detections = String(this.detections.length);
    this.draw();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.draw(), BOX_TTL_MS + 50);
  }

  zones(body) {
    this.polygons = body && body.polygons && typeof body.polygons === "object" ? body.polygons : {};
    this.draw();
  }

  lines(body) {
    const object = (value) => (value && typeof value === "object" ? value : {});
    this.linePoints = object(body && body.points);
    this.lineCounts = object(body && body.lines);
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    if (this.image) {
      if (canvas.width !== this.image.naturalWidth || canvas.height !== this.image.naturalHeight) {
        canvas.width = this.image.naturalWidth;
        canvas.height = this.image.naturalHeight;
      }
      ctx.drawImage(this.image, 0, 0);
    } else {
      ctx.fillStyle = "#20242b";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    const w = canvas.width;
    const h = canvas.height;
    const px = Math.max(2, Math.round(w / 320));
    ctx.lineWidth = px;
    ctx.font = `${Math.max(12, Math.round(w / 45))}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    const own = this.kind !== "drawn"; // a drawn snapshot has its zones and boxes already
    const zones = own ? drawZones(ctx, this.polygons, w, h) : 0;
    const lines = drawLines(ctx, this.linePoints, this.lineCounts, w, h, px);
    const fresh = performance.now() - this.detectionsAt <= BOX_TTL_MS;
    const tags = own && fresh ? drawBoxes(ctx, this.detections, w, h, px) : [];
    canvas.dataset.snapshot = this.kind;
    canvas.dataset.boxes = String(tags.length);
    canvas.dataset.tags = JSON.stringify(tags);
    canvas.dataset.zones = String(zones);
    canvas.dataset.lines = String(lines);
  }
}
