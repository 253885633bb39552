// Per-stage latency (p50 and p95) of one device over the stats received since the page opened (uPlot).
import uPlot from "../vendor/uPlot.esm.js";

// The stages the agent times, in the order a frame meets them; others it may add are charted after.
const ORDER = ["capture", "motion", "preprocess", "inference", "postprocess", "tracking", "publish", "total"];
const COLOURS = ["#4e79a7", "#9c755f", "#59a14f", "#e15759", "#f28e2b", "#b07aa1", "#76b7b2", "#444444"];

function stagesOf(history) {
  const seen = new Set();
  for (const stats of history) for (const stage of Object.keys(stats.latency_ms || {})) seen.add(stage);
  const known = ORDER.filter((s) => seen.has(s));
  return known.concat([...seen].filter((s) => !ORDER.includes(s)).sort());
}

export class LatencyChart {
  constructor(container) {
    this.container = container;
    this.plot = null;
    this.stages = [];
    this.resize = new ResizeObserver(() => this._fit());
    this.resize.observe(container);
  }

  _size() {
    const width = Math.max(280, this.container.clientWidth);
    return { width, height: width < 500 ? 180 : 240 };
  }

  _fit() {
    if (this.plot) this.plot.setSize(this._size());
  }

  _build(stages) {
    if (this.plot) this.plot.destroy();
    this.stages = stages;
    const series = [{ label: "time" }];
    stages.forEach((stage, i) => {
      const stroke = COLOURS[i % COLOURS.length];
      series.push({ label: `${stage} p50`, stroke, width: 1.5, value: (u, v) => (v == null ? "–" : v.toFixed(1)) });
      series.push({ label: "p95", stroke, width: 1, dash: [4, 4], value: (u, v) => (v == null ? "–" : v.toFixed(1)) });
    });
    const options = {
      ...this._size(),
      series,
      scales: { x: { time: true } },
      axes: [{}, { label: "ms", size: 50 }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    this.plot = new uPlot(options, this._data([]), this.container);
  }

  _data(history) {
    const columns = [history.map((s) => s.ts)];
    for (const stage of this.stages) {
      columns.push(history.map((s) => (s.latency_ms && s.latency_ms[stage] ? s.latency_ms[stage].p50 : null)));
      columns.push(history.map((s) => (s.latency_ms && s.latency_ms[stage] ? s.latency_ms[stage].p95 : null)));
    }
    return columns;
  }

  show(history) {
    const stages = stagesOf(history);
    if (!this.plot || stages.join() !== this.stages.join()) this._build(stages);
    this.plot.setData(this._data(history));
    this.container.dataset.points = String(history.length);
  }

  clear() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.stages = [];
    this.container.dataset.points = "0";
  }
}
