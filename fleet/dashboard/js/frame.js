// The latest snapshot of the open device with its live detections drawn over it on a canvas.
//
// The snapshot (a retained JPEG) is the background; each `detections` message replaces the boxes,
// which fade out once no detection came for BOX_TTL_MS (the agent sends nothing for empty frames).
// Zone outlines come from the retained `zones` message's `polygons`.

const BOX_TTL_MS = 1500;
const PALETTE = ["#e15759", "#4e79a7", "#59a14f", "#f28e2b", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7"];

function colourOf(label) {
  let hash = 0;
  for (const ch of String(label)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

export class FrameView {
  constructor(canvas, caption) {
    this.canvas = canvas;
    this.caption = caption;
    this.image = null;
    this.imageUrl = null;
    this.detections = [];
    this.detectionsAt = 0;
    this.polygons = {};
    this.timer = null;
  }

  reset() {
    if (this.imageUrl) URL.revokeObjectURL(this.imageUrl);
    this.image = null;
    this.imageUrl = null;
    this.detections = [];
    this.polygons = {};
    this.canvas.dataset.snapshot = "none";
    this.caption.textContent = "waiting for a snapshot";
    this.draw();
  }

  snapshot(payload) {
    const url = URL.createObjectURL(new Blob([payload], { type: "image/jpeg" }));
    const image = new Image();
    image.onload = () => {
      if (this.imageUrl) URL.revokeObjectURL(this.imageUrl);
      this.image = image;
      this.imageUrl = url;
      this.canvas.dataset.snapshot = "loaded";
      this.caption.textContent = `snapshot received ${new Date().toLocaleTimeString([], { hour12: false })}`;
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
    this.source = body.source;
    this.draw();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.draw(), BOX_TTL_MS + 50);
  }

  zones(body) {
    this.polygons = body && body.polygons && typeof body.polygons === "object" ? body.polygons : {};
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
    const line = Math.max(2, Math.round(w / 320));
    ctx.lineWidth = line;
    ctx.font = `${Math.max(12, Math.round(w / 45))}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    let outlined = 0;
    for (const [name, points] of Object.entries(this.polygons)) {
      if (!Array.isArray(points) || points.length < 3) continue;
      outlined += 1;
      ctx.strokeStyle = "#ffd166";
      ctx.setLineDash([8, 6]);
      ctx.beginPath();
      points.forEach(([x, y], i) => (i ? ctx.lineTo(x * w, y * h) : ctx.moveTo(x * w, y * h)));
      ctx.closePath();
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = "#ffd166";
      ctx.fillText(name, points[0][0] * w + 4, points[0][1] * h + 4);
    }
    let drawn = 0;
    if (performance.now() - this.detectionsAt <= BOX_TTL_MS) {
      for (const d of this.detections) {
        if (!Array.isArray(d.box) || d.box.length !== 4) continue;
        const [x1, y1, x2, y2] = d.box;
        const colour = colourOf(d.label);
        ctx.strokeStyle = colour;
        ctx.strokeRect(x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h);
        const tag = `${d.label} ${Math.round((d.confidence || 0) * 100)}%${d.track_id ? ` #${String(d.track_id).slice(-4)}` : ""}`;
        const width = ctx.measureText(tag).width + 8;
        const height = parseInt(ctx.font, 10) + 6;
        const top = y1 * h >= height ? y1 * h - height : y1 * h;
        ctx.fillStyle = colour;
        ctx.fillRect(x1 * w - line / 2, top, width, height);
        ctx.fillStyle = "#fff";
        ctx.fillText(tag, x1 * w + 4 - line / 2, top + 3);
        drawn += 1;
      }
    }
    canvas.dataset.boxes = String(drawn);
    canvas.dataset.zones = String(outlined);
    if (drawn) canvas.dataset.boxesEver = String(Number(canvas.dataset.boxesEver || 0) + drawn);
  }
}
