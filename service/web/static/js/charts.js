// Tiny SVG charts drawn in the page (no chart library, no network): lines, points and markers.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toFixed(10)));
  return ticks;
}

/**
 * lineChart({series: [{name, points: [[x, y]], dots}], xLabel, yLabel, xDomain, yDomain, diagonal, markers, title})
 * markers: [{x, y, cls, label}] drawn as circles with a <title>.
 */
export function lineChart(opts) {
  const W = opts.width || 440, H = opts.height || 260;
  const m = { l: 46, r: 12, t: 12, b: 38 };
  const all = opts.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  const [x0, x1] = opts.xDomain || [Math.min(...all.map((p) => p[0]), 0), Math.max(...all.map((p) => p[0]), 1)];
  let [y0, y1] = opts.yDomain || [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (!Number.isFinite(y0) || !Number.isFinite(y1)) [y0, y1] = [0, 1];
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => m.l + ((x - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
  const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.title || "chart" });
  root.append(svg("title", {}, opts.title || "chart"));
  for (const t of niceTicks(y0, y1)) {
    root.append(svg("line", { class: "grid", x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }));
    root.append(svg("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, String(+t.toFixed(3))));
  }
  for (const t of niceTicks(x0, x1)) {
    root.append(svg("text", { x: sx(t), y: H - m.b + 15, "text-anchor": "middle" }, String(+t.toFixed(3))));
  }
  root.append(svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  root.append(svg("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
  if (opts.xLabel) root.append(svg("text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle" }, opts.xLabel));
  if (opts.yLabel) root.append(svg("text", { x: 12, y: (m.t + H - m.b) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})` }, opts.yLabel));
  if (opts.diagonal) root.append(svg("path", { class: "diag", d: `M${sx(x0)},${sy(y0)}L${sx(x1)},${sy(y1)}` }));
  opts.series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (!pts.length) return;
    const cls = s.cls ?? i;
    root.append(svg("path", { class: `s${cls}`, d: pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("") }));
    if (s.dots || pts.length === 1) for (const p of pts) root.append(svg("circle", { class: `d${cls}`, cx: sx(p[0]), cy: sy(p[1]), r: 3 }));
  });
  for (const mk of opts.markers || []) {
    if (!Number.isFinite(mk.x) || !Number.isFinite(mk.y)) continue;
    const c = svg("circle", { class: mk.cls || "op", cx: sx(mk.x), cy: sy(mk.y), r: 6 });
    c.append(svg("title", {}, mk.label || ""));
    root.append(c);
  }
  return root;
}

// The key (legend) under a chart: one swatch per series.
export function chartKey(names) {
  const box = document.createElement("div");
  box.className = "key";
  names.forEach((n, i) => {
    const s = document.createElement("span");
    s.className = `k${i}`;
    s.textContent = n;
    box.append(s);
  });
  return box;
}

// Threshold statistics from validation scores (probability of the positive class) and truths (booleans).
// The report stores scores to 6 decimals while the operating threshold keeps full precision (and often
// equals one film's score), so a score within half a unit of the 6th decimal counts as reaching it.
const SCORE_EPS = 6e-7;
export function statsAt(scores, truths, threshold) {
  let tp = 0, fp = 0, tn = 0, fn = 0;
  for (let i = 0; i < scores.length; i++) {
    const pos = scores[i] >= threshold - SCORE_EPS;
    if (truths[i]) pos ? tp++ : fn++;
    else pos ? fp++ : tn++;
  }
  const r = (a, b) => (a + b ? a / (a + b) : null);
  return { tp, fp, tn, fn, sensitivity: r(tp, fn), specificity: r(tn, fp), ppv: r(tp, fp), npv: r(tn, fn) };
}

// The ROC curve (false-positive rate, true-positive rate) and its trapezoid AUC.
export function rocCurve(scores, truths) {
  const order = scores.map((s, i) => [s, truths[i]]).sort((a, b) => b[0] - a[0]);
  const P = truths.filter(Boolean).length, N = truths.length - P;
  if (!P || !N) return { points: [], auc: null };
  const points = [[0, 0]];
  let tp = 0, fp = 0, auc = 0;
  for (let i = 0; i < order.length; i++) {
    if (order[i][1]) tp++; else fp++;
    if (i === order.length - 1 || order[i + 1][0] !== order[i][0]) {
      const [px, py] = points[points.length - 1];
      const x = fp / N, y = tp / P;
      auc += (x - px) * (y + py) / 2;
      points.push([x, y]);
    }
  }
  return { points, auc };
}
