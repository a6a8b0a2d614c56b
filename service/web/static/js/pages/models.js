// Staff: evaluation report pages, versions side by side, promotion and roll-back with the alias history.
import { api } from "../api.js";
import { chartKey, lineChart, rocCurve, statsAt } from "../charts.js";
import { badge, ci, clear, el, field, notice, num, pct, table, when } from "../ui.js";

export async function renderList(main) {
  document.title = "Models · Hilum";
  const models = await api.get("/v1/models");
  main.append(el("h1", { text: "Models" }));
  if (!models.length) { main.append(notice("info", "No model yet: train one on the Train page.")); return; }
  main.append(el("div", { class: "panel" }, table(["Model", "Versions", "Aliases", "Newest"], models.map((m) => [
    el("a", { href: `#/models/${encodeURIComponent(m.name)}`, text: m.name }), String(m.versions.length),
    Object.entries(m.aliases || {}).map(([a, v]) => `${a} → v${v}`).join(", ") || "none", `v${m.latest_version}`]))));
}

const m = (v, split, key) => v.metrics?.[split]?.[key];

export async function renderModel(main, [name]) {
  document.title = `${name} · Hilum`;
  const [model, history] = await Promise.all([
    api.get(`/v1/models/${encodeURIComponent(name)}`), api.get(`/v1/models/${encodeURIComponent(name)}/aliases/history`)]);
  const prod = model.aliases?.production;
  main.append(el("h1", { text: `Model ${name}` }),
    el("p", {}, "Production: ", prod ? el("strong", { "data-testid": "production", text: `version ${prod}` }) : el("strong", { "data-testid": "production", text: "none (the newest fit version answers)" })));
  const status = el("div", { "aria-live": "polite" });
  const promote = async (version, verb) => {
    clear(status);
    try {
      await api.put(`/v1/models/${encodeURIComponent(name)}/aliases/production`, { version });
      clear(main);
      await renderModel(main, [name]);
      main.querySelector("[aria-live]")?.append(notice("ok", `${verb}: production is now version ${version}.`));
    } catch (err) {
      status.append(notice("bad", `Refused: ${err.message}`));
    }
  };
  const moves = history.filter((h) => h.alias === "production").sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  const last = moves[0];
  if (last && last.from_version) {
    main.append(el("p", {}, el("button", { class: "secondary", type: "button", text: `Roll back to version ${last.from_version}`,
      onclick: () => promote(last.from_version, "Rolled back") })));
  }
  main.append(status);
  const versions = [...model.versions].sort((a, b) => b.version - a.version).slice(0, 6);
  const aliasesOf = (v) => Object.entries(model.aliases || {}).filter(([, x]) => x === v.version).map(([a]) => a);
  const rows = [
    ["Created", (v) => when(v.created_at)],
    ["Backbone", (v) => v.backbone],
    ["Aliases", (v) => aliasesOf(v).map((a) => badge(a, a === "production" ? "ok" : ""))],
    ["Fit for use", (v) => (v.fit_for_use ? badge("yes", "ok") : el("span", {}, badge("no", "bad"), " ", (v.fitness_reasons || []).join("; ")))],
    ["Validation AUROC", (v) => num(m(v, "val", "auroc"))],
    ["Test AUROC", (v) => { const c = m(v, "test", "auroc_ci95"); return `${num(m(v, "test", "auroc"))}${c ? ` (${ci(c, (x) => num(x, 2))})` : ""}`; }],
    ["Test sensitivity", (v) => pct(m(v, "test", "sensitivity"))],
    ["Test specificity", (v) => pct(m(v, "test", "specificity"))],
    ["Threshold", (v) => num(v.threshold)],
    ["Report", (v) => (v.job_id ? el("a", { href: `#/jobs/${v.job_id}/report`, text: "evaluation" }) : el("span", { class: "muted", text: v.source || "imported" }))],
    ["", (v) => (prod === v.version ? el("span", { class: "muted", text: "in production" })
      : el("button", { type: "button", disabled: !v.fit_for_use, "aria-label": `Promote version ${v.version} to production`, text: "Promote to production",
        onclick: () => promote(v.version, "Promoted") }))],
  ];
  const head = el("tr", {}, el("th", { scope: "col", text: "Version" }), versions.map((v) => el("th", { scope: "col", text: `v${v.version}` })));
  const body = rows.map(([label, f]) => el("tr", {}, el("th", { scope: "row", text: label }), versions.map((v) => el("td", {}, f(v)))));
  main.append(el("section", { class: "panel" }, el("h2", { text: "Versions side by side" }),
    el("div", { class: "table-wrap" }, el("table", { class: "versions" }, el("thead", {}, head), el("tbody", {}, body)))));
  const newestFirst = [...history].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  main.append(el("section", { class: "panel" }, el("h2", { text: "Alias history" }), history.length
    ? table(["When", "Alias", "From", "To", "By (key id)"], newestFirst.map((h) => [when(h.created_at), h.alias, h.from_version ? `v${h.from_version}` : "–", `v${h.to_version}`, h.actor ?? "–"]))
    : el("p", { class: "muted", text: "No alias has been moved yet." })));
}

// Validation predictions stored in the job report: scores of the positive class and the truth.
export function validationPredictions(report) {
  const raw = report.val_predictions ?? report.validation_predictions ?? report.predictions?.validation ?? report.predictions?.val;
  if (!raw) return null;
  const pos = report.positive_class;
  const names = report.class_names || [];
  let scores = raw.p_pos ?? raw.scores ?? raw.positive_scores ?? null;
  const probs = raw.probabilities ?? raw.probs ?? null;
  if (!scores && Array.isArray(probs)) {
    const i = Math.max(0, names.indexOf(pos));
    scores = probs.map((p) => (Array.isArray(p) ? p[i] : p));
  }
  const labels = raw.is_pos ?? raw.labels ?? raw.truth ?? null;
  if (!Array.isArray(scores) || !Array.isArray(labels) || scores.length !== labels.length) return null;
  const posIndex = names.indexOf(pos);
  const truths = labels.map((l) => (typeof l === "boolean" ? l : typeof l === "string" ? l === pos : posIndex >= 0 ? l === posIndex : l === 1));
  return { scores: scores.map(Number), truths };
}

export async function renderReport(main, [jobId]) {
  document.title = "Evaluation · Hilum";
  const [job, report] = await Promise.all([api.get(`/v1/jobs/${jobId}`), api.get(`/v1/jobs/${jobId}/report`)]);
  const pos = report.positive_class;
  const op = report.operating_point || {};
  const val = report.val_metrics || {}, test = report.test_metrics || {};
  main.append(el("h1", { text: `Evaluation: ${job.model_name}${job.model_version ? ` version ${job.model_version}` : ""}` }),
    el("p", { class: "muted" }, `${job.spec.backbone} · ${job.spec.strategy} · best epoch ${report.best_epoch ?? "–"} of ${report.epochs_run ?? "–"} · `,
      `splits: ${Object.entries(report.split_sizes || {}).map(([k, v]) => `${k} ${v}`).join(", ")} · `,
      el("a", { href: `#/models/${job.model_name}`, text: "versions and promotion" })));
  const promoteBox = el("div", { "aria-live": "polite" });
  if (job.model_version && report.fitness?.fit_for_use !== false) {
    promoteBox.append(el("button", { type: "button", text: `Promote version ${job.model_version} to production`, onclick: async (e) => {
      e.target.disabled = true;
      try {
        await api.put(`/v1/models/${encodeURIComponent(job.model_name)}/aliases/production`, { version: job.model_version });
        promoteBox.append(notice("ok", `Production is now version ${job.model_version}.`));
      } catch (err) { promoteBox.append(notice("bad", `Refused: ${err.message}`)); e.target.disabled = false; }
    } }));
  }
  const fitness = report.fitness || {};
  if (fitness.fit_for_use === false) main.append(notice("bad", el("strong", { text: "Not fit for use. " }), (fitness.reasons || []).join("; "), ". This version cannot take the production alias."));
  for (const w of report.warnings || []) main.append(notice("warn", w));
  main.append(promoteBox);
  const keys = [["auroc", "AUROC", num], ["accuracy", "Accuracy", pct], ["sensitivity", "Sensitivity", pct], ["specificity", "Specificity", pct],
    ["ppv", "PPV", pct], ["npv", "NPV", pct], ["f1", "F1", num], ["n", "Films", String]];
  const aucText = (x) => `${num(x.auroc)}${x.auroc_ci95 ? ` (95% CI ${ci(x.auroc_ci95, (y) => num(y, 3))})` : ""}`;
  main.append(el("section", { class: "panel" }, el("h2", { text: "Metrics" }),
    table(["Metric", "Validation", "Test"], keys.map(([k, label, f]) => [label,
      k === "auroc" ? aucText(val) : val[k] == null ? "–" : f(val[k]), k === "auroc" ? aucText(test) : test[k] == null ? "–" : f(test[k])]), { numeric: [1, 2] }),
    el("p", { class: "small muted", text: `Threshold ${num(op.threshold)} on the probability of ${pos}${op.rule ? `, chosen as ${op.rule}` : ""}.${op.note ? ` ${op.note}` : ""}` })));

  const preds = validationPredictions(report);
  const grid = el("div", { class: "grid" });
  main.append(grid);
  const rocBox = el("section", { class: "panel" }, el("h2", { text: "ROC (validation)" }));
  grid.append(rocBox);
  if (preds) {
    const roc = rocCurve(preds.scores, preds.truths);
    const now = { x: 1 - (op.specificity ?? NaN), y: op.sensitivity ?? NaN };
    const marker = { x: NaN, y: NaN, cls: "now", label: "slider threshold" };
    const draw = () => lineChart({ title: "ROC curve", xLabel: "1 − specificity", yLabel: "sensitivity", xDomain: [0, 1], yDomain: [0, 1], diagonal: true,
      series: [{ points: roc.points }], markers: [{ ...now, label: `operating point (threshold ${num(op.threshold)})` }, marker] });
    const holder = el("div", {}, draw());
    rocBox.append(holder, el("p", {}, `AUC ${aucText(val)} on validation; test ${aucText(test)}. `, el("span", { class: "badge bad", text: "●" }), " operating point ", el("span", { class: "badge warn", text: "●" }), " slider"));
    grid.append(sliderPanel(preds, op, pos, (s) => { marker.x = 1 - (s.specificity ?? NaN); marker.y = s.sensitivity ?? NaN; holder.replaceChildren(draw()); }, job));
  } else {
    rocBox.append(reportImage(jobId, report, "roc.png", "ROC curves"), el("p", {}, `AUC ${aucText(val)} on validation; test ${aucText(test)}.`));
    grid.append(el("section", { class: "panel" }, el("h2", { text: "Threshold" }),
      notice("info", "This report has no stored validation predictions, so the threshold slider is not available.")));
  }
  const cal = report.calibration || {};
  const rel = report.reliability;
  const relChart = rel && (rel.before || rel.after)
    ? el("div", {}, lineChart({ title: "reliability diagram", xLabel: "confidence", yLabel: "accuracy", xDomain: [0, 1], yDomain: [0, 1], diagonal: true,
      series: [{ points: (rel.before || []).map((b) => [b.confidence, b.accuracy]), dots: true }, { points: (rel.after || []).map((b) => [b.confidence, b.accuracy]), dots: true }] }),
      chartKey(["before calibration", "after calibration"]))
    : reportImage(jobId, report, "calibration.png", "reliability diagram");
  grid.append(el("section", { class: "panel" }, el("h2", { text: "Calibration" }), relChart,
    table(["", "Before", "After"], [["NLL", num(cal.nll_before), num(cal.nll_after)], ["ECE", num(cal.ece_before), num(cal.ece_after)]], { numeric: [1, 2] }),
    el("p", { class: "small muted", text: `Temperature ${num(cal.temperature)}${cal.applied === false ? ` (not applied: ${cal.reason})` : ""}.` }),
    report.conformal ? el("p", { class: "small muted", text: `Prediction sets: ${report.conformal.method}, ${pct(report.conformal.coverage, 0)} coverage (test: ${pct(report.conformal.empirical_test_coverage)}).` }) : null,
    report.ood ? el("p", { class: "small muted", text: `Out-of-distribution check: ${report.ood.method}; threshold ${num(report.ood.threshold, 1)}, validation false-flag rate ${pct(report.ood.val_fpr)}.` }) : null));
  const cm = test.confusion_matrix;
  if (Array.isArray(cm) && cm.length === 2) {
    const neg = (report.class_names || []).find((c) => c !== pos) ?? "negative";
    grid.append(el("section", { class: "panel" }, el("h2", { text: "Confusion matrix (test)" }),
      el("div", { class: "table-wrap" }, el("table", { class: "cm" },
        el("thead", {}, el("tr", {}, el("th", { text: "true \\ predicted" }), el("th", { scope: "col", text: neg }), el("th", { scope: "col", text: pos }))),
        el("tbody", {}, el("tr", {}, el("th", { scope: "row", text: neg }), el("td", { text: cm[0][0] }), el("td", { text: cm[0][1] })),
          el("tr", {}, el("th", { scope: "row", text: pos }), el("td", { text: cm[1][0] }), el("td", { text: cm[1][1] })))))));
  }
  const hist = report.history || [];
  if (hist.length) {
    grid.append(el("section", { class: "panel" }, el("h2", { text: "Training curves" }),
      lineChart({ title: "loss and validation AUROC per epoch", xLabel: "epoch", series: [
        { points: hist.map((h) => [h.epoch, h.train_loss]), dots: true }, { points: hist.map((h) => [h.epoch, h.val?.loss]), dots: true },
        { points: hist.map((h) => [h.epoch, h.val?.auroc]), dots: true }] }),
      chartKey(["training loss", "validation loss", "validation AUROC"])));
  }
}

function reportImage(jobId, report, name, alt) {
  if (!report.images || !report.images[name]) return el("p", { class: "muted", text: `No ${alt} in this report.` });
  return el("img", { src: `/v1/jobs/${jobId}/report/${name}`, alt, class: "chart" });
}

function sliderPanel(preds, op, pos, onMove, job) {
  // The slider moves in steps of 0.001; it starts at the exact operating threshold (often equal to one film's score).
  const slider = el("input", { type: "range", min: 0, max: 1000, step: 1, value: Math.floor(1000 * (op.threshold ?? 0.5)), name: "threshold" });
  let exact = op.threshold ?? null;
  const out = el("div", { class: "slider-out", "aria-live": "polite" });
  const counts = el("p", { class: "small muted" });
  const value = el("strong", { "data-testid": "slider-threshold" });
  const cell = (label, v, id) => el("div", {}, el("span", { text: label }), el("b", { "data-testid": id, text: pct(v) }));
  const current = () => exact ?? slider.value / 1000;
  const update = () => {
    const t = current();
    const s = statsAt(preds.scores, preds.truths, t);
    value.textContent = t.toFixed(4);
    clear(out).append(cell("Sensitivity", s.sensitivity, "sens"), cell("Specificity", s.specificity, "spec"), cell("PPV", s.ppv, "ppv"), cell("NPV", s.npv, "npv"));
    counts.textContent = `At ${t.toFixed(4)}: ${s.tp} true positives, ${s.fn} missed, ${s.fp} false alarms, ${s.tn} true negatives (${preds.scores.length} validation films).`;
    slider.setAttribute("aria-valuetext", `threshold ${t.toFixed(4)}, sensitivity ${pct(s.sensitivity)}, specificity ${pct(s.specificity)}`);
    onMove(s);
  };
  slider.addEventListener("input", () => { exact = null; update(); });
  const reason = el("input", { type: "text", name: "reason", placeholder: "why (recorded with your key and the time)" });
  const status = el("div", { "aria-live": "polite" });
  const apply = el("button", { type: "button", class: "secondary", text: "Use this threshold for the version", onclick: async () => {
    clear(status);
    try {
      await api.put(`/v1/models/${encodeURIComponent(job.model_name)}/versions/${job.model_version}/threshold`, { threshold: current(), reason: reason.value });
      status.append(notice("ok", `Threshold set to ${current().toFixed(4)}: every later prediction of this version uses it.`));
    } catch (err) { status.append(notice("bad", `Refused: ${err.message}`)); }
  } });
  const box = el("section", { class: "panel" }, el("h2", { text: "Threshold" }),
    el("p", {}, `Move the threshold on the probability of ${pos}: `, value),
    field("Threshold", slider), out, counts,
    el("p", { class: "small muted", text: `The model's operating threshold is ${num(op.threshold)} (validation sensitivity ${pct(op.sensitivity)}, specificity ${pct(op.specificity)}).` }),
    job.model_version ? el("div", { class: "row" }, field("Reason", reason), apply) : null, status);
  queueMicrotask(update);
  return box;
}
