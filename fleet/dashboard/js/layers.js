// What the device view draws over the snapshot, one function per layer: zone outlines, counting lines
// with their counts, and the live boxes. Each takes the 2D context and the canvas size in pixels, and
// returns how many it drew (the canvas's data attributes, which the tests read).
import { boxTag } from "./format.js";

// The agent's snapshot palette (agent/pipeline/snapshot.py PALETTE, BGR there), by class id, so a class
// has one colour in Home Assistant's snapshot and on this page (tests/fleet/test_dashboard_drawing.py).
export const PALETTE = [
  "#ff3838", "#ff9d97", "#ff701f", "#ffb21d", "#cfd231", "#48f90a", "#92cc17", "#3ddb86",
  "#00bcd3", "#1c82d1", "#6473ff", "#0018ec", "#8438ff", "#520085", "#cb38ff", "#ff95c8",
];
export const ZONE_COLOUR = "#ffd700"; // the agent's ZONE_COLOR
const LINE_COLOUR = "#00e5ff"; // apart from the zones' amber and most of the palette

function colourOf(detection) {
  const id = Number.isInteger(detection.class_id) ? detection.class_id : 0;
  return PALETTE[((id % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

function isPoint(p) {
  return Array.isArray(p) && p.length === 2 && p.every((v) => typeof v === "number" && Number.isFinite(v));
}

// Text on a dark pill, so it reads on any scene; (x, y) is its top left.
function tagAt(ctx, text, x, y, background, foreground = "#fff") {
  const width = ctx.measureText(text).width + 8;
  const height = parseInt(ctx.font, 10) + 6;
  ctx.fillStyle = background;
  ctx.fillRect(x, y, width, height);
  ctx.fillStyle = foreground;
  ctx.fillText(text, x + 4, y + 3);
  return height;
}

export function drawZones(ctx, polygons, w, h) {
  let drawn = 0;
  for (const [name, points] of Object.entries(polygons)) {
    if (!Array.isArray(points) || points.length < 3 || !points.every(isPoint)) continue;
    drawn += 1;
    ctx.strokeStyle = ZONE_COLOUR;
    ctx.setLineDash([8, 6]);
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x * w, y * h) : ctx.moveTo(x * w, y * h)));
    ctx.closePath();
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = ZONE_COLOUR;
    ctx.fillText(name, points[0][0] * w + 4, points[0][1] * h + 4);
  }
  return drawn;
}

function total(perLabel) {
  return Object.values(perLabel || {}).reduce((sum, n) => sum + (typeof n === "number" ? n : 0), 0);
}

// A segment, an arrow across it pointing to its `in` side, and "NAME in N / out M" by the arrow's head.
// `in` is a crossing from the line's left to its right, looking from its first point to its second
// (agent/scene/lines.py): in image coordinates (y down) the right-hand normal of (dx, dy) is (-dy, dx).
export function drawLines(ctx, points, counts, w, h, px) {
  let drawn = 0;
  for (const [name, ends] of Object.entries(points)) {
    if (!Array.isArray(ends) || ends.length !== 2 || !ends.every(isPoint)) continue;
    const [[x1, y1], [x2, y2]] = ends;
    const [ax, ay, bx, by] = [x1 * w, y1 * h, x2 * w, y2 * h];
    const length = Math.hypot(bx - ax, by - ay);
    if (!length) continue;
    drawn += 1;
    const [nx, ny] = [-(by - ay) / length, (bx - ax) / length];
    const [mx, my] = [(ax + bx) / 2, (ay + by) / 2];
    const reach = Math.max(14, w / 28);
    ctx.strokeStyle = LINE_COLOUR;
    ctx.fillStyle = LINE_COLOUR;
    ctx.lineWidth = px * 1.5;
    ctx.beginPath();
    ctx.moveTo(ax, ay);
    ctx.lineTo(bx, by);
    ctx.stroke();
    for (const [x, y] of [[ax, ay], [bx, by]]) {
      ctx.beginPath();
      ctx.arc(x, y, px * 2, 0, 2 * Math.PI);
      ctx.fill();
    }
    const [tipX, tipY] = [mx + nx * reach, my + ny * reach];
    ctx.lineWidth = px;
    ctx.beginPath();
    ctx.moveTo(mx - nx * reach * 0.6, my - ny * reach * 0.6);
    ctx.lineTo(tipX, tipY);
    ctx.stroke();
    const head = reach * 0.45;
    ctx.beginPath();
    ctx.moveTo(tipX, tipY);
    ctx.lineTo(tipX - nx * head + ny * head * 0.6, tipY - ny * head - nx * head * 0.6);
    ctx.lineTo(tipX - nx * head - ny * head * 0.6, tipY - ny * head + nx * head * 0.6);
    ctx.closePath();
    ctx.fill();
    const line = counts[name] || {};
    const text = `${name} in ${total(line.in)} / out ${total(line.out)}`;
    const width = ctx.measureText(text).width + 8;
    const x = Math.min(Math.max(0, tipX + (nx >= 0 ? 4 : -width - 4)), Math.max(0, w - width));
    const y = Math.min(Math.max(0, tipY - parseInt(ctx.font, 10) / 2 - 3), h - parseInt(ctx.font, 10) - 6);
    tagAt(ctx, text, x, y, "rgba(20, 24, 31, 0.8)", LINE_COLOUR);
  }
  return drawn;
}

// Boxes with their tags (the agent's format); returns the tags drawn, in order.
export function drawBoxes(ctx, detections, w, h, px) {
  const tags = [];
  ctx.lineWidth = px;
  for (const d of detections) {
    if (!Array.isArray(d.box) || d.box.length !== 4 || !d.box.every((v) => typeof v === "number")) continue;
    const [x1, y1, x2, y2] = d.box;
    const colour = colourOf(d);
    ctx.strokeStyle = colour;
    ctx.strokeRect(x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h);
    const tag = boxTag(d.label, d.confidence, d.track_id);
    const height = parseInt(ctx.font, 10) + 6;
    const top = y1 * h >= height ? y1 * h - height : y1 * h; // above the box when there is room
    tagAt(ctx, tag, x1 * w - px / 2, top, colour);
    tags.push(tag);
  }
  return tags;
}
