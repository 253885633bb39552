// How figures are written on the page: one place, so the table and the device view agree.

export const DASH = "–";

export function fixed(value, digits, unit = "") {
  return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : DASH;
}

export function age(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return DASH;
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

// The end of an object's id: enough to tell the objects of one picture or log apart.
export function shortId(id) {
  return String(id).slice(-6);
}

// A box's tag, as the agent's snapshots write it (agent/pipeline/snapshot.py box_tag): "circle 96% #abc123".
// The same arithmetic on the same double (the 4-decimal confidence of `detections`), halves rounded up.
export function boxTag(label, confidence, trackId) {
  const score = typeof confidence === "number" && Number.isFinite(confidence) ? confidence : 0;
  const tag = `${label} ${Math.floor(score * 100 + 0.5)}%`;
  return trackId ? `${tag} #${shortId(trackId)}` : tag;
}

export function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

export function parseJson(payload) {
  try {
    const value = JSON.parse(new TextDecoder().decode(payload));
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

export function text(payload) {
  return new TextDecoder().decode(payload);
}

// An element with text and attributes, children appended: enough DOM building for this page.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}
