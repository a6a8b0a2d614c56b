// Small DOM helpers: every value goes in as text, never as HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "value") node.value = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) { node.replaceChildren(); return node; }

let fieldCount = 0;
// A labelled control: <div><label for=id>Text</label><input id=id> <small hint></div>.
export function field(text, control, hint) {
  if (!control.id) control.id = `f${++fieldCount}`;
  let hintNode = null;
  if (hint) {
    hintNode = el("span", { class: "muted small", id: `${control.id}-hint`, text: hint });
    control.setAttribute("aria-describedby", hintNode.id);
  }
  return el("div", { class: "field" }, el("label", { for: control.id, text }), control, hintNode);
}

export function toast(message, kind = "") {
  const box = document.getElementById("toast");
  const item = el("div", { class: kind, text: message });
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

export const pct = (x, digits = 1) => (x === null || x === undefined || Number.isNaN(x) ? "–" : `${(100 * x).toFixed(digits)}%`);
export const num = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits));
export const ci = (pair, fmt = pct) => (Array.isArray(pair) && pair.length === 2 ? `${fmt(pair[0])}–${fmt(pair[1])}` : null);

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${r} s` : `${r} s`;
}

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

export function badge(text, kind = "") { return el("span", { class: `badge ${kind}`, text }); }

export function notice(kind, ...children) { return el("div", { class: `notice ${kind}`, role: kind === "bad" ? "alert" : null }, ...children); }

export function table(headers, rows, { numeric = [] } = {}) {
  const head = el("tr", {}, headers.map((h, i) => el("th", { scope: "col", class: numeric.includes(i) ? "num" : null, text: h })));
  const body = rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : null }, c))));
  const thead = headers.some(Boolean) ? el("thead", {}, head) : null;  // a key-value table has no header row
  return el("div", { class: "table-wrap" }, el("table", {}, thead, el("tbody", {}, body)));
}

export function progressBar(label) {
  const bar = el("progress", { max: 1, value: 0, "aria-label": label });
  const left = el("span"), right = el("span");
  const wrap = el("div", {}, bar, el("div", { class: "bar-label" }, left, right));
  return {
    node: wrap,
    set(fraction, leftText = "", rightText = "") {
      bar.value = Math.max(0, Math.min(1, fraction || 0));
      left.textContent = leftText;
      right.textContent = rightText;
    },
    indeterminate(text = "") { bar.removeAttribute("value"); left.textContent = text; right.textContent = ""; },
  };
}

// Horizontal bars (class counts and the like).
export function hbars(entries) {
  const max = Math.max(1, ...entries.map(([, v]) => v));
  return el("div", {}, entries.map(([k, v]) => {
    const fill = el("span");
    fill.style.width = `${(100 * v) / max}%`;
    return el("div", { class: "hbar" }, el("span", { text: k }), el("span", { class: "track" }, fill), el("span", { class: "num", text: v }));
  }));
}

export function downloadText(filename, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
